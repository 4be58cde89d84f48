"""More call-centre vocabulary and templates: what the "broad" sentence grammar adds to the core one.

A model trained on the core grammar alone scored 0.79 on held-out voices reading training-design sentences
but 0.71 on held-out sentences: what it learns about sentiment is tied to the training design's phrases.
This extension gives training many more phrasings per class. Every list here is *appended* to the core list of
the same slot (new slots are new lists), so each core item keeps its index and with it its train/test role:
the core grammar's held-out phrases and templates stay held out under the broad grammar, and test sets
rendered from the core grammar remain unseen by a model trained on the broad one (tests/model/test_synth.py).
Nothing here may contain a core held-out phrase; the same test checks that too.
Training on it alone did not raise held-out accuracy on the core held-out sentences (the shortfall was
word recognition, not phrasing); the shipped recipe trains on both grammars.
"""

from __future__ import annotations

EXTRA_VOCAB: dict[str, tuple[str, ...]] = {
    # --- shared, no valence ---
    "product": (
        "fibre broadband", "landline", "roaming bundle", "tablet", "games console", "boiler cover",
        "car loan", "overdraft", "credit limit", "pet insurance", "travel insurance", "life insurance",
        "student account", "business line", "conference call package", "headset", "smart watch",
        "photo prints", "furniture order", "sofa", "mattress", "dishwasher", "oven", "vacuum cleaner",
        "bicycle", "paint order", "kitchen fitting", "window cleaning", "council tax account", "tax refund",
        "season ticket", "concert tickets", "ferry booking", "coach tickets", "eye test", "blood test results",
        "vet appointment", "school meals account", "nursery fees", "rent account", "energy tariff",
        "solar panels", "heat pump", "security camera", "alarm system", "door lock", "phone case",
        "printer", "ink cartridges", "software licence", "cloud storage", "music subscription",
        "newspaper subscription", "magazine order", "meal kit", "grocery delivery", "takeaway order",
        "taxi booking", "lost luggage claim", "hire car", "breakdown cover",
    ),
    "field": (
        "billing address", "bank details", "sort code", "account number", "national insurance number",
        "passport number", "driving licence number", "marital status", "title", "nickname", "second phone number",
        "work email", "home address", "reference number", "customer number", "meter reading",
        "direct debit date", "communication preferences", "next of kin", "occupation",
    ),
    "name": (
        "Alice", "Jonas", "Elena", "Marcus", "Leila", "Arjun", "Rosa", "Kevin", "Zara", "Hugo",
        "Chloe", "Tariq", "Anna", "Patrick", "Noor", "Stefan", "Lucy", "Femi", "Helen", "Diego",
        "Julia", "Omar", "Katie", "Viktor", "Ruth", "Ahmed", "Isla", "Pablo", "Joy", "Ethan",
    ),
    "agent": (
        "the plumber", "the delivery man", "the woman in the branch", "the call handler", "the supervisor",
        "the surveyor", "the fitter", "the night team", "the person on the chat", "the repair crew",
        "the salesman", "the complaints officer", "the account manager", "the young man on the phone",
        "the team leader",
    ),
    "department": (
        "the help desk", "underwriting", "maintenance", "the warranty team", "customer service",
        "the loyalty team", "the lending team", "the moving team", "the online team", "the mortgage team",
    ),
    "duration": (
        "since yesterday", "for about a fortnight", "since last month", "for the past week", "since Christmas",
        "for two hours", "since this morning", "for three months", "since the summer", "for a couple of days",
        "since Wednesday", "for most of the day", "since the new year", "for eight days", "since I moved in",
    ),
    "times": (
        "seven times", "a dozen times", "twice today", "every week", "over and over", "three times this month",
        "once already", "about ten times", "again and again", "four times since Monday",
    ),
    "intens": (
        "deeply", "properly", "seriously", "awfully", "hugely", "really quite", "just so", "terribly",
    ),
    "payment_method": (
        "credit transfer", "postal order", "the app", "contactless", "a new card", "monthly payments",
        "quarterly payments", "an annual payment", "gift card", "loyalty points",
    ),
    "channel": (
        "on the phone", "by text", "in a letter", "on the app", "at the counter", "through the website",
        "by voicemail", "in the chat window", "on social media", "in person",
    ),
    # --- negative ---
    "neg_open": (
        "Right,", "I'm sorry to say,", "Again,", "Excuse me,", "Hang on,", "No,", "Come on,",
        "I'm telling you,", "With respect,", "Not again,",
    ),
    "neg_problem": (
        "has been faulty since day one", "keeps freezing", "was sent to the wrong address", "cut out again",
        "never works when I need it", "was overcharged", "has a crack in it", "was switched off by mistake",
        "is making a horrible noise", "won't turn on", "went down in the storm and nobody came",
        "was refused for no reason", "is still showing an error", "was handed to a neighbour and lost",
        "charged me a fee I never agreed to", "is leaking", "has lost all my data", "is slower than ever",
        "was damaged in transit", "is a week late", "was closed without my permission",
        "double billed me", "keeps logging me out", "is still stuck", "never got processed",
    ),
    "neg_feel": (
        "gutted", "horrified", "distressed", "humiliated", "insulted", "cheated", "betrayed", "sick of this",
        "really cross", "at my wits end", "devastated", "ignored", "mistreated", "embarrassed", "heartbroken",
    ),
    "neg_adj": (
        "a shambles", "diabolical", "beyond a joke", "not good enough", "a complete waste of time",
        "utterly hopeless", "a rip off", "scandalous", "the worst experience of my life", "unprofessional",
        "insulting", "unbelievably bad", "a farce", "really poor", "dreadful",
    ),
    "neg_staff": (
        "put the phone down on me", "didn't listen to a word I said", "never called me back",
        "read from a script and nothing else", "left me waiting in all day", "told me it was my fault",
        "sent me round in circles", "lost my paperwork", "shouted at me", "closed my complaint without asking",
        "missed the appointment again", "charged me for nothing", "gave up on me", "treated me like an idiot",
        "left a mess everywhere",
    ),
    "neg_demand": (
        "have this written off", "see a refund by Friday", "speak to someone senior", "end my contract early",
        "have the fee removed", "go to trading standards", "write to the chief executive",
        "get an apology in writing", "move my business elsewhere", "have it replaced today",
    ),
    "neg_conseq": (
        "I had to take a day off unpaid", "my kids missed school", "I've had no heating all week",
        "I had to pay twice", "my credit score has been hit", "I've been sleeping badly", "I lost a client",
        "I have been crying all morning", "my elderly father was stuck at home", "the food in my freezer spoiled",
        "I was late for my own wedding fitting", "the whole house was flooded", "I've lost my deposit",
        "I can't work from home", "I'm out of pocket by hundreds",
    ),
    "neg_close": (
        "I've had it with you.", "This is beyond a joke.", "I want a proper apology.", "Don't call me again.",
        "Shame on you.", "I'll be telling everyone.", "Fix it now.", "I'm absolutely sick of this.",
        "This can't go on.", "I want my money back today.",
    ),
    # --- positive ---
    "pos_open": (
        "Aw,", "Yay,", "Oh how lovely,", "Superb,", "Ah,", "Oh brilliant,", "Oh that's great,",
        "Smashing,", "Good news,", "Fabulous,",
    ),
    "pos_thanks": (
        "thanks so much", "thank you ever so much", "I'm really thankful", "thank you from the bottom of my heart",
        "cheers for that", "thanks again", "I owe you one", "thank you for sorting it", "a big thank you",
        "thanks a bunch",
    ),
    "pos_fixed": (
        "is working beautifully", "was replaced the same day", "is perfect now", "was installed in no time",
        "was credited back straight away", "came in perfect condition", "is faster than ever",
        "was exactly right", "was approved within an hour", "is sorted", "is brilliant now",
        "was refunded in full", "was repaired really quickly", "is up and running again",
        "was ready before I arrived", "was waiting for me at home", "was set up perfectly",
        "finally came through", "was a lot cheaper than I expected", "arrived in one piece",
    ),
    "pos_feel": (
        "so happy", "ecstatic", "really pleased", "very content", "delighted to bits", "blown away",
        "much happier", "full of praise", "really grateful", "optimistic", "on cloud nine", "made up",
        "comforted", "encouraged", "tickled pink",
    ),
    "pos_adj": (
        "spot on", "top notch", "faultless", "fabulous", "a joy to deal with", "exceptional",
        "really reassuring", "so friendly", "wonderfully kind", "brilliant value", "the best",
        "a huge help", "second to none", "absolutely lovely", "great fun",
    ),
    "pos_staff": (
        "sorted it in five minutes", "was an absolute gem", "went out of their way for me",
        "rang me back within the hour", "treated me so well", "was really understanding",
        "made it all so simple", "stayed late to finish the job", "tidied up after the work",
        "talked me through every step", "waived the fee for me", "found me a better deal",
        "was kind to my dad", "kept their promise", "did it all with a smile",
    ),
    "pos_result": (
        "I've got my evenings back", "we can watch the match tonight", "I'm saving every month",
        "the kids can do their homework again", "my dad is so pleased", "the house is warm again",
        "I can finally relax", "I got my deposit back", "I'm back online", "it made my week",
        "I'll be a customer for life", "I'm sleeping better", "my shop is busy again", "it all worked out",
        "I'm telling all my friends",
    ),
    "pos_close": (
        "All the best.", "You've been brilliant.", "I'll give you five stars.", "Thanks again for everything.",
        "What a relief.", "I'm a very happy customer.", "Take care now.", "That's made my week.",
        "You're wonderful.", "I'll be back for sure.",
    ),
    # --- neutral ---
    "neu_open": (
        "Um,", "Well then,", "Hi there,", "Good evening,", "One more thing,", "By the way,", "Hello again,",
        "Quick question,", "Okay then,", "Anyway,",
    ),
    "neu_action": (
        "cancel a direct debit on my {product}", "pay off the rest of my {product}", "add my {field} to the {product}",
        "switch the {product} to paperless", "check the balance of my {product}", "order a spare {product}",
        "confirm the start date of my {product}", "report a change of {field}", "ask {department} about my {product}",
        "take the {product} off auto renewal",
    ),
    "neu_status": (
        "ends on", "was activated on", "was changed on", "will be collected on", "gets renewed on",
        "was dispatched on", "will be billed on", "was approved on", "was requested on", "will close on",
    ),
    "neu_info": (
        "is on a rolling contract", "was bought in the sale", "is under my husband's name",
        "is for the spare room", "has a twelve month term", "is billed to my office", "is the newer version",
        "came with the house", "is paid by my employer", "is linked to my old number",
        "uses my middle name", "is set to paper bills", "is on the family plan", "has no end date",
        "was a gift from my sister",
    ),
    "neu_small": (
        "I'm just getting my glasses.", "I'm on the bus at the moment.", "Sorry, the signal is patchy here.",
        "Let me turn the radio down.", "I'm standing in the kitchen.", "I've got the letter in front of me.",
        "I'm using my husband's phone.", "Hold on, someone's at the door.", "I've just got in from work.",
        "I'm writing this down as we go.", "My neighbour gave me this number.", "I've got a pen now.",
        "It's quite noisy in the office.", "I'm in the car park.", "I'll have to be quick.",
    ),
    "neu_close": (
        "I'll look out for the letter.", "That answers my question.", "I'll ring again if I need to.",
        "I'll check my emails.", "Bye for now.", "I'll let my wife know.", "That's it from me.",
        "I'll wait to hear back.", "Thanks, bye.", "I'll sort the rest online.",
    ),
    # --- new slots ---
    "neg_question": (
        "Why is this so difficult?", "How is this acceptable?", "What am I paying you for?",
        "Does anyone there actually care?", "Why should I keep waiting?", "How hard can it be?",
        "Who is responsible for this mess?", "Why does this keep happening to me?", "Is this some kind of joke?",
        "Why wasn't I told?",
    ),
    "pos_wish": (
        "I hope you have a lovely weekend", "I wish everyone was as helpful as you",
        "I hope your manager hears how good you were", "you deserve a pay rise", "I hope the rest of your day goes well",
        "I'll be sure to mention you in the survey", "I wish I'd called sooner",
        "I hope they know how good you are", "you should be proud of your team", "I'll recommend you to my family",
    ),
    "neu_question": (
        "What time do you close today?", "Is there a reference I should quote?", "Do you need my postcode as well?",
        "Which option should I press next time?", "How long does that usually take?",
        "Can you spell that for me?", "Is that the right department?", "Should I keep the old one?",
        "Do you want the first line of the address?", "Is there a fee for that?",
    ),
}

EXTRA_TEMPLATES: dict[str, tuple[str, ...]] = {
    "negative": (
        "{neg_question} My {product} {neg_problem}.",
        "{neg_open} {neg_question} I've rung {times} and {neg_conseq}.",
        "I'm {neg_feel}. {agent} {neg_staff} and my {product} {neg_problem}.",
        "Honestly the way {department} dealt with my {product} is {neg_adj}.",
        "I paid {amount} by {payment_method} and my {product} {neg_problem}.",
        "{name} promised me {channel} that it was fixed, but it {neg_problem}.",
        "It has been like this {duration} and I am {intens} {neg_feel}.",
        "{neg_open} I want to {neg_demand}, {neg_conseq}.",
        "My {product} {neg_problem} again and frankly it's {neg_adj}.",
        "{agent} {neg_staff} {duration}. {neg_question}",
        "I feel {intens} {neg_feel} about how {agent} treated me.",
        "After {times} calls my {product} {neg_problem} and {neg_conseq}.",
        "Your {product} is {neg_adj}. {neg_close}",
        "{neg_open} my {field} is wrong again and {neg_conseq}.",
        "No one from {department} has replied {channel} {duration}, which is {neg_adj}.",
        "I'm {neg_feel} and I want to {neg_demand}. {neg_question}",
        "The {product} {neg_problem}, {agent} {neg_staff}, and {neg_conseq}.",
        "You charged me {amount} on {date} and my {product} {neg_problem}.",
        "I was told {name} would ring me on {date}, but {agent} {neg_staff}.",
        "{neg_open} this {product} has been {neg_adj} from the start.",
        "Can you explain why my {product} {neg_problem}? {neg_close}",
        "Every single time, {agent} {neg_staff}. I'm {neg_feel}.",
        "{neg_question} I'm {intens} {neg_feel} with your {department} team.",
        "Because of your {product} {neg_conseq}, and I am {neg_feel}.",
        "I've been loyal {duration} and I'm {neg_feel} that my {product} {neg_problem}.",
        "{neg_open} {neg_conseq}. I want to {neg_demand}.",
        "The way my {product} was handled {channel} was {neg_adj}.",
        "Please tell {name} I'm {neg_feel}. {neg_close}",
        "My {product} {neg_problem} and {agent} {neg_staff}. {neg_question}",
        "{neg_open} I'm {intens} {neg_feel}, this is {neg_adj}.",
    ),
    "positive": (
        "{pos_open} my {product} {pos_fixed}, {pos_wish}.",
        "I just rang to say {agent} {pos_staff}. {pos_close}",
        "{name} was {pos_adj} {channel} and {pos_result}.",
        "I'm {intens} {pos_feel}, {agent} {pos_staff}.",
        "{pos_thanks}, {pos_result}. {pos_close}",
        "The {product} {pos_fixed} and I'm {pos_feel}.",
        "{pos_open} {pos_wish}. {name} {pos_staff}.",
        "You refunded {amount} on {date}, {pos_thanks}.",
        "{department} were {pos_adj}, {pos_wish}.",
        "I feel {intens} {pos_feel} now that my {product} {pos_fixed}.",
        "I was dreading this call but {agent} {pos_staff}.",
        "{pos_open} {pos_result}, {pos_thanks}.",
        "My {field} was changed {channel} in a minute, which was {pos_adj}.",
        "{name}, you've been {pos_adj}. {pos_close}",
        "Since {date} my {product} {pos_fixed} and {pos_result}.",
        "Could you tell {name}'s manager that they {pos_staff}?",
        "I've had my {product} {duration} and it's been {pos_adj}.",
        "{pos_open} I'm {pos_feel} with my new {product}. {pos_close}",
        "{agent} {pos_staff} and my {product} {pos_fixed}.",
        "You've been {intens} {pos_adj}, {pos_wish}.",
        "I'm {pos_feel} because {pos_result}.",
        "It only cost {amount} and my {product} {pos_fixed}. {pos_close}",
        "{pos_open} that was {pos_adj}, {pos_thanks}.",
        "I was worried about my {product} but {agent} {pos_staff}.",
        "Honestly I'm {pos_feel}, {pos_wish}.",
        "{pos_thanks}. My {product} {pos_fixed} and I'm {intens} {pos_feel}.",
        "Paying by {payment_method} was {pos_adj} and {pos_result}.",
        "{name} from {department} {pos_staff}. {pos_close}",
        "{pos_open} the {product} {pos_fixed}, {pos_result}.",
        "Is there a survey I can fill in? {agent} {pos_staff}.",
    ),
    "neutral": (
        "{neu_question} I'm calling about my {product}.",
        "{neu_open} I need to {neu_action}. {neu_question}",
        "My {field} should be under {name}, at {address}.",
        "{neu_small} I'm calling to {neu_action}.",
        "The {product} {neu_status} {date}, I think.",
        "{neu_open} the payment of {amount} was made by {payment_method}.",
        "Can I {neu_action} {channel}?",
        "I have a {product} with you and it {neu_info}.",
        "{name} in {department} said to call this number.",
        "The last reading was taken on {date}. {neu_close}",
        "{neu_open} could you check whether my {product} {neu_info}?",
        "I'm ringing on behalf of {name} about the {product}.",
        "{neu_question} The {product} {neu_info}.",
        "Please send the details {channel}. {neu_close}",
        "I'd like to {neu_action} before {date}.",
        "{neu_open} my {field} changed {duration}.",
        "The {product} was about {amount}, if that helps.",
        "{agent} said I should {neu_action}.",
        "{neu_small} {neu_question}",
        "My reference is {digits} and it's about the {product}.",
        "{neu_open} I'm free after {time} most days.",
        "The {product} {neu_status} {date} and {neu_info}.",
        "Could you put me through to {department}? {neu_close}",
        "{neu_open} I just want to {neu_action}, nothing else.",
        "We spoke on {date} about the {product}.",
        "I'll read you the {field}, it's on the letter. {neu_small}",
        "{neu_open} I can pay {amount} by {payment_method} on {date}.",
        "Does the {product} come with a {product}?",
        "My {product} {neu_info}, and the {field} has not changed.",
        "{neu_open} {neu_question} {neu_close}",
    ),
}
