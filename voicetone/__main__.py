from voicetone.cli import main

raise SystemExit(main())
