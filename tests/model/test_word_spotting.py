"""The ASR stage's word-spotting target: vocabulary, multi-hot bags and the max-pooled loss."""

import math

import torch

from model.train.asr_stage import bag_of_words, word_head, word_spotting_loss, word_vocab


def test_vocabulary_keeps_words_seen_in_two_transcripts_case_and_punctuation_folded():
    assert word_vocab(["Thanks, so much!", "so kind", "thanks again", "", None]) == ["so", "thanks"]


def test_bag_marks_each_vocabulary_word_once_and_ignores_unknown_words():
    index = {"so": 0, "thanks": 1}
    bag = bag_of_words(["thanks thanks SO", "nothing here"], index)
    assert bag.tolist() == [[1.0, 1.0], [0.0, 0.0]]


def test_loss_reads_the_best_frame_and_never_a_padded_one():
    bag = torch.tensor([[1.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    # word 0 named loudly in frame 1; word 1 scored high only in the padded frame 2
    logits = torch.tensor([[[-9.0, -9.0], [9.0, -9.0], [-9.0, 9.0]]])
    good = word_spotting_loss(logits, mask, bag)
    assert good["loss"].item() < 0.01 and good["f1"].item() == 1.0
    # the same scores with word 0 nowhere: the loss is that of a missed word
    miss = word_spotting_loss(logits.index_fill(2, torch.tensor([0]), -9.0), mask, bag)
    assert miss["loss"].item() > 8.0 and miss["f1"].item() == 0.0


def test_head_starts_at_the_word_prior():
    head = word_head(8, ["a", "b", "c", "d"], words_per_utterance=1.0)
    assert math.isclose(torch.sigmoid(head.bias[0]).item(), 0.25, rel_tol=1e-5)
