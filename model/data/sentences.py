"""Call-centre sentences with a sentiment label, from a compositional grammar.

No labelled speech corpus can be downloaded, so the text side of the synthetic
corpus comes from here. The grammar is built so that a model cannot win by a
lexical shortcut: products, dates, amounts, names and questions appear in all
three classes; only the valence-bearing words and phrasing differ.

Two grammars: "core" and "broad" (core plus model/data/sentences_broad.py: twice the templates and many
more phrases per slot). Broad only appends, so core's held-out phrases and templates stay held out under
broad.

Train/test separation (so test scores measure generalisation, not recall):
every 5th item of each vocabulary slot is *held out*; a train sentence never
contains a held-out phrase, a test sentence always contains at least one, and
half of the test sentences come from templates (every 5th per class) that
training never uses. Hence no test sentence can ever appear in training.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, NamedTuple

from model.data.sentences_broad import EXTRA_TEMPLATES, EXTRA_VOCAB

SENTIMENTS: tuple[str, str, str] = ("positive", "neutral", "negative")
SPLITS = ("train", "test")
HELD_OUT_EVERY = 5  # every 5th slot item and every 5th template (offset below) is test-only
_HELD_OUT_OFFSET = 3

# --- vocabulary shared by all classes (no valence) ---------------------------------------------
_SHARED: dict[str, tuple[str, ...]] = {
    "product": (
        "internet connection", "broadband", "phone line", "mobile plan", "data plan", "bill", "invoice",
        "refund", "delivery", "parcel", "order", "account", "password", "credit card", "debit card",
        "subscription", "appointment", "booking", "reservation", "insurance claim", "loan application",
        "mortgage payment", "direct debit", "router", "modem", "cable box", "television package",
        "streaming service", "gas meter", "electricity supply", "water bill", "warranty", "repair",
        "replacement phone", "laptop", "washing machine", "fridge", "flight", "hotel room", "car rental",
        "prescription", "membership", "gift card", "voucher", "loyalty points", "pension statement",
        "online banking", "mobile app", "email account", "home phone", "SIM card", "contract", "upgrade",
        "installation", "bank transfer", "deposit", "policy", "train tickets", "return", "exchange",
        "shipment", "parking permit", "gym membership", "dental appointment", "car insurance",
        "home insurance", "savings account", "phone upgrade", "smart meter", "satellite dish",
    ),
    "field": (
        "address", "email address", "phone number", "billing date", "payment method", "postcode",
        "date of birth", "account name", "contact details", "delivery address", "preferred language",
        "account holder", "security question", "mailing address", "tariff", "username", "surname",
        "middle name", "employer details", "emergency contact",
    ),
    "name": (
        "Sarah", "James", "Priya", "Mohammed", "Olga", "Chen", "Maria", "David", "Fatima", "Tom",
        "Aisha", "Lukas", "Emma", "Carlos", "Yuki", "Grace", "Peter", "Nadia", "Sam", "Ben",
        "Hannah", "Kofi", "Ingrid", "Raj", "Sofia", "Daniel", "Amara", "Liam", "Mei", "Oscar",
    ),
    "agent": (
        "the agent", "the engineer", "the technician", "the driver", "the lady on the phone",
        "the man I spoke to", "your colleague", "the manager", "the advisor", "the courier",
        "the person in the shop", "the support team", "the installer", "the receptionist", "your team",
    ),
    "department": (
        "billing", "technical support", "sales", "retentions", "collections", "accounts", "delivery",
        "claims", "customer relations", "complaints", "bookings", "payments", "fraud", "installations",
        "returns",
    ),
    "duration": (
        "for two weeks", "for three days", "since Monday", "for over an hour", "for a month now",
        "since last Tuesday", "for ten days", "since the weekend", "for nearly a year",
        "since the start of the month", "all morning", "for forty minutes", "since Friday",
        "for six weeks", "since the holidays",
    ),
    "times": (
        "three times", "five times", "twice this week", "every day this week", "four times",
        "more than once", "several times", "six times today", "twice", "three days in a row",
    ),
    "intens": (
        "really", "absolutely", "totally", "completely", "extremely", "so", "incredibly", "truly",
        "genuinely", "very", "quite", "thoroughly",
    ),
    "payment_method": (
        "bank transfer", "cheque", "direct debit", "cash", "PayPal", "standing order", "card",
        "money order", "voucher", "instalments",
    ),
    "channel": (
        "by email", "by text message", "by post", "on the website", "in the app", "over the phone",
        "in the branch", "through the portal", "by letter", "in the online chat",
    ),
}

# --- valence-bearing vocabulary ---------------------------------------------------------------
_NEGATIVE: dict[str, tuple[str, ...]] = {
    "neg_open": (
        "", "Honestly,", "Look,", "I'm sorry but", "Listen,", "To be frank,", "This is ridiculous,",
        "I can't believe this,", "Unbelievable,", "Seriously,", "Once again,", "I'm fed up,",
        "Frankly,", "For goodness sake,", "I'm not happy,",
    ),
    "neg_problem": (
        "has stopped working", "keeps dropping out", "still hasn't arrived", "was cancelled without warning",
        "is broken again", "was charged twice", "has been down all week", "never showed up",
        "is completely useless", "keeps failing", "was lost", "arrived damaged", "got rejected for no reason",
        "has been delayed again", "is still not fixed", "was blocked", "has disappeared", "keeps crashing",
        "stopped working after the update", "is wrong again", "has been a disaster", "went missing",
        "was messed up", "failed again", "is still broken",
    ),
    "neg_feel": (
        "frustrated", "angry", "upset", "disappointed", "annoyed", "furious", "fed up", "sick and tired",
        "disgusted", "let down", "unhappy", "livid", "appalled", "stressed", "worried", "fuming",
        "irritated", "exasperated", "outraged", "miserable",
    ),
    "neg_adj": (
        "unacceptable", "ridiculous", "a complete joke", "terrible", "awful", "a disgrace", "outrageous",
        "pathetic", "the worst service I have ever had", "a nightmare", "absurd", "shameful",
        "a total mess", "incompetent", "appalling", "shocking", "useless", "a scam", "disgraceful",
        "horrible",
    ),
    "neg_staff": (
        "hung up on me", "was rude to me", "ignored my emails", "gave me the wrong information",
        "promised a callback that never came", "kept me on hold for an hour", "transferred me five times",
        "refused to help", "lied to me", "blamed me for your mistake", "laughed at me",
        "never turned up", "wasted my whole afternoon", "made things worse", "couldn't be bothered",
        "was useless", "argued with me", "cut me off", "talked down to me", "broke my gate",
    ),
    "neg_demand": (
        "cancel my contract", "speak to a manager", "make a formal complaint", "get my money back",
        "close my account", "take this to the ombudsman", "leave a bad review", "switch to another provider",
        "escalate this", "report this", "get compensation", "cancel everything", "file a complaint",
        "take legal advice", "stop paying",
    ),
    "neg_conseq": (
        "I have lost a whole day of work", "I missed an important meeting", "my kids couldn't do their homework",
        "I've wasted hours on the phone", "I was charged a late fee", "I can't pay my rent",
        "nobody tells me anything", "I'm paying for nothing", "my business is losing customers",
        "I couldn't sleep last night", "I had to cancel my trip", "my mother was left without heating",
        "I've been left out of pocket", "I missed my flight", "my food went off", "I've had enough",
        "I got an angry letter from the bank", "I had to borrow money", "I look like a fool at work",
        "my whole week is ruined",
    ),
    "neg_close": (
        "This is the last time.", "I want this sorted today.", "I'm done with you people.",
        "Don't tell me to wait again.", "I expect a proper answer.", "Never again.",
        "You should be ashamed.", "I'm not paying a penny more.", "Sort it out.", "What a shambles.",
    ),
}

_POSITIVE: dict[str, tuple[str, ...]] = {
    "pos_open": (
        "", "Oh,", "Wow,", "Honestly,", "Well,", "Great,", "Brilliant,", "Perfect,", "Oh wonderful,",
        "That's lovely,", "Fantastic,", "Amazing,", "Oh good,", "Excellent,", "Lovely,",
    ),
    "pos_thanks": (
        "thank you so much", "thanks a lot", "thank you very much", "many thanks", "I really appreciate it",
        "I'm very grateful", "cheers", "thanks a million", "thank you kindly", "I can't thank you enough",
        "thanks ever so much", "much appreciated", "thank you for your patience", "bless you",
        "thanks for everything",
    ),
    "pos_fixed": (
        "is working perfectly now", "arrived early", "was sorted out in minutes", "has been refunded already",
        "is back up and running", "was delivered right on time", "works better than ever",
        "was approved straight away", "is all set up", "was fixed on the first try", "is so much faster now",
        "came a day early", "was easy to set up", "is working like a dream", "was resolved quickly",
        "was exactly what I wanted", "is great value", "was handled beautifully", "is finally working",
        "was upgraded for free", "is better than I hoped", "went smoothly", "was a success",
        "is running nicely", "was done perfectly",
    ),
    "pos_feel": (
        "happy", "delighted", "relieved", "thrilled", "pleased", "grateful", "impressed", "glad",
        "over the moon", "satisfied", "excited", "reassured", "amazed", "chuffed", "thankful",
        "content", "overjoyed", "touched", "cheerful", "proud",
    ),
    "pos_adj": (
        "fantastic", "excellent", "brilliant", "wonderful", "amazing", "superb", "outstanding",
        "a real pleasure", "really helpful", "very kind", "so patient", "lovely", "great", "perfect",
        "first class", "a star", "marvellous", "incredible", "terrific", "a lifesaver",
    ),
    "pos_staff": (
        "went above and beyond", "explained everything clearly", "fixed it in no time",
        "was so patient with me", "called me back straight away", "made it really easy",
        "sorted everything out", "took the time to listen", "gave me a discount", "really looked after me",
        "was friendly and helpful", "solved it in one call", "cheered me up", "was very professional",
        "made my day", "answered all my questions", "was wonderful with my mother",
        "kept me informed the whole time", "was polite and quick", "did a great job",
    ),
    "pos_result": (
        "I can finally work from home again", "my kids are so happy", "I saved a lot of money",
        "everything is back to normal", "I didn't have to wait at all", "it was so easy",
        "I got everything I needed", "I can relax now", "my mother is thrilled", "the whole family is pleased",
        "I can enjoy my weekend", "it saved me a trip", "my business is doing well again",
        "I'll sleep well tonight", "it's the best service I've had", "I feel looked after",
        "my problem is gone", "I made it to the wedding", "we love it", "it's a weight off my mind",
    ),
    "pos_close": (
        "You've made my day.", "Have a wonderful day.", "I'll definitely recommend you.",
        "Keep up the great work.", "I couldn't be happier.", "That's a huge relief.", "You're a star.",
        "Great job, really.", "I'm so glad I called.", "Enjoy your evening.",
    ),
}

_NEUTRAL: dict[str, tuple[str, ...]] = {
    "neu_open": (
        "", "Okay,", "Right,", "So,", "Yes,", "Alright,", "Hello,", "Hi,", "Good morning,",
        "Good afternoon,", "Just so you know,", "For the record,", "Also,", "Sure,", "Now,",
    ),
    "neu_action": (
        "update the {field} on my account", "check the status of my {product}", "change the date of my {product}",
        "ask a question about my {product}", "confirm my {field}", "add a second name to my {product}",
        "move my {product} to a new address", "find out when my {product} renews", "get a copy of my {product}",
        "pay my {product}", "book a new {product}", "transfer my {product} to my partner",
        "check which {department} team handles my {product}", "know the price of a {product}",
        "register a {product}", "change my {field}", "request a paper copy of my {product}",
        "set up a {product}", "speak to someone in {department}", "check my {field}",
    ),
    "neu_status": (
        "is scheduled for", "renews on", "is due on", "was set up on", "will be posted on",
        "expires on", "was last updated on", "starts on", "was registered on", "will be reviewed on",
    ),
    "neu_info": (
        "is in my partner's name", "is the standard one", "was opened last year", "is on the basic tariff",
        "is linked to my email", "is paid monthly", "is under my maiden name", "covers two people",
        "is the older model", "is shared with my brother", "is paid quarterly", "uses the same password",
        "was transferred from my old bank", "is registered to my work address", "is a business account",
    ),
    "neu_small": (
        "It's been raining here all day.", "I'm calling from my car.", "I'm on my lunch break.",
        "The line is a little quiet.", "I'm just looking for a pen.", "My dog is barking in the background.",
        "I'll put you on speaker.", "I'm reading it off the letter.", "Give me a second to find it.",
        "I'm at the office at the moment.", "The kids are at school.", "I usually do this online.",
        "It's the first time I've called.", "I'm calling for my father.", "My phone battery is at half.",
    ),
    "neu_close": (
        "That's all for today.", "I'll wait for the email.", "I'll call back next week.",
        "Please note it on the account.", "That's everything I needed.", "I'll check the letter.",
        "Speak to you later.", "I'll write that down.", "Okay, goodbye.", "I'll hold.",
    ),
}

VOCAB: dict[str, tuple[str, ...]] = {**_SHARED, **_NEGATIVE, **_POSITIVE, **_NEUTRAL}

# --- dynamic slots: numbers, dates, amounts, addresses (spelt out so every engine reads them alike) ---
_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORD = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
        "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
        "eighteenth", "nineteenth", "twentieth", "twenty first", "twenty second", "twenty third",
        "twenty fourth", "twenty fifth", "twenty sixth", "twenty seventh", "twenty eighth")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_STREETS = ("Oak", "Maple", "Station", "Church", "Mill", "High", "Park", "Victoria", "King", "Queen",
            "Elm", "Cedar", "Bridge", "Green", "Forest", "River", "Hill", "Windsor", "York", "Lincoln")
_STREET_KIND = ("Street", "Road", "Avenue", "Lane", "Close", "Drive", "Way", "Crescent")
_CURRENCY = ("pounds", "dollars", "euros")


def number_words(n: int) -> str:
    """0..9999 in words ("one hundred and twelve"), so TTS engines never guess how to read digits."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    rest = n % 1000
    head = number_words(n // 1000) + " thousand"
    if rest == 0:
        return head
    return head + (" and " if rest < 100 else " ") + number_words(rest)


def _digits(rng: random.Random, k: int) -> str:
    return " ".join(_ONES[rng.randrange(10)] for _ in range(k))


_DYNAMIC: dict[str, tuple[Callable[[random.Random], str], int]] = {
    # name: (generator, number of distinct values) -- the count feeds reachable()
    "digits": (lambda r: _digits(r, r.choice((4, 6))), 10**4 + 10**6),
    "amount": (lambda r: f"{number_words(r.randrange(2, 1000))} {r.choice(_CURRENCY)}", 998 * 3),
    "date": (lambda r: f"{r.choice(_DAYS)} the {r.choice(_ORD)} of {r.choice(_MONTHS)}", 7 * 28 * 12),
    "time": (lambda r: f"{number_words(r.randrange(1, 13))} {r.choice(('in the morning', 'in the afternoon', 'thirty', 'fifteen', 'o clock'))}", 60),
    "address": (lambda r: f"{number_words(r.randrange(1, 200))} {r.choice(_STREETS)} {r.choice(_STREET_KIND)}", 199 * 20 * 8),
}

# --- templates: a sentence is one template with its slots filled ------------------------------------
TEMPLATES: dict[str, tuple[str, ...]] = {
    "negative": (
        "{neg_open} my {product} {neg_problem} and nobody has helped me.",
        "I have called {times} about my {product} and it {neg_problem}.",
        "{neg_open} this is {intens} {neg_adj}, {neg_conseq}.",
        "I am {intens} {neg_feel} because my {product} {neg_problem}.",
        "{agent} {neg_staff} and now I want to {neg_demand}.",
        "I was charged {amount} on {date} for a {product} I never asked for. {neg_close}",
        "Why does nobody ever call me back about my {product}?",
        "How many times do I have to explain that my {product} {neg_problem}?",
        "My {product} {neg_problem} {duration} and {neg_conseq}.",
        "{neg_open} {agent} {neg_staff}. {neg_close}",
        "I'm {neg_feel}, {neg_conseq} because of your {product}.",
        "Your {department} team is {neg_adj} and I want to {neg_demand}.",
        "Is anyone actually going to fix my {product}? {neg_close}",
        "{neg_open} I have been waiting {duration} and my {product} {neg_problem}.",
        "I told {name} {times} that my {product} {neg_problem} and {neg_conseq}.",
        "Frankly the way {agent} treated me was {neg_adj}.",
        "What kind of service is this? My {product} {neg_problem} {duration}.",
        "You took {amount} from my account without asking and {neg_conseq}.",
        "I'm {intens} {neg_feel}. I want to {neg_demand} today.",
        "{neg_open} I'm {neg_feel} with how my {product} was handled {channel}.",
        "The {product} I paid {amount} for {neg_problem}. {neg_close}",
        "Every time I ring {department} I get nowhere and {neg_conseq}.",
        "Do you have any idea how {neg_feel} I am? {agent} {neg_staff}.",
        "I was promised my {product} on {date} and it {neg_problem}.",
        "{neg_open} I updated my {field} {times} and it is still wrong, which is {neg_adj}.",
        "This whole thing with my {product} is {neg_adj} and I am {intens} {neg_feel}.",
        "{name} said it would be sorted by {date} but {agent} {neg_staff}.",
        "I've been a customer for years and this is {neg_adj}. {neg_close}",
        "You cut off my {product} {channel} without warning and {neg_conseq}.",
        "{neg_open} I can't believe {agent} {neg_staff} again.",
    ),
    "positive": (
        "{pos_open} {pos_thanks}, my {product} {pos_fixed}.",
        "{agent} {pos_staff} and I'm {intens} {pos_feel}.",
        "I just wanted to say {name} was {pos_adj}. {pos_close}",
        "I'm {intens} {pos_feel} that my {product} {pos_fixed}.",
        "Could you pass my thanks on to {name}? {agent} {pos_staff}.",
        "{pos_open} the refund of {amount} arrived on {date}, {pos_thanks}.",
        "Isn't that great? My {product} {pos_fixed}.",
        "{pos_open} you have been {pos_adj}, {pos_thanks}.",
        "My {product} {pos_fixed} and {pos_result}.",
        "Since {agent} came round {pos_result}. {pos_close}",
        "The {department} team was {pos_adj} and {pos_result}.",
        "{pos_open} I'm {pos_feel}, {pos_result}.",
        "Can I leave a good review for {name}? They {pos_staff}.",
        "I only waited a minute and my {product} {pos_fixed}. {pos_close}",
        "{pos_open} {name} {pos_staff}, {pos_thanks}.",
        "Honestly the service {channel} was {pos_adj} and {pos_result}.",
        "I was a bit worried {duration} but now I'm {intens} {pos_feel}.",
        "You saved me {amount} on my {product}, {pos_thanks}.",
        "What a {intens} {pos_adj} experience, my {product} {pos_fixed}.",
        "{pos_open} my {field} was updated {channel} in seconds, {pos_thanks}.",
        "I called {times} in the past but today {agent} {pos_staff}. {pos_close}",
        "I'm {pos_feel} to hear that, it means {pos_result}.",
        "Your {department} people are {pos_adj}. {pos_close}",
        "The engineer came on {date} and {pos_result}.",
        "{pos_open} that's {intens} {pos_adj} news about my {product}.",
        "Everything about my {product} has been {pos_adj} and I'm {pos_feel}.",
        "{agent} {pos_staff}, so {pos_result}.",
        "Do you know how {pos_feel} I am? My {product} {pos_fixed}.",
        "After all this time my {product} {pos_fixed}, {pos_thanks}.",
        "{pos_open} {pos_thanks}, {name} was {pos_adj} {channel}.",
    ),
    "neutral": (
        "{neu_open} I'd like to {neu_action}.",
        "My account number is {digits}.",
        "Can you tell me when my {product} {neu_status} please?",
        "{neu_open} my {product} {neu_status} {date}.",
        "The payment of {amount} will be taken on {date} by {payment_method}.",
        "I moved to {address} in {month}.",
        "{neu_open} the {product} {neu_info}.",
        "Is it possible to pay for my {product} by {payment_method}?",
        "I'll transfer you to the {department} team now.",
        "The reference number is {digits}, and the {field} is the same as before.",
        "{neu_open} I'm calling to {neu_action}. {neu_small}",
        "We sent the details of your {product} {channel} on {date}.",
        "{name} from {department} asked me to call about my {product}.",
        "My {field} is listed {channel}, under {address}.",
        "{neu_open} I spoke to {agent} {duration} about my {product}. {neu_close}",
        "Could you read back my {field} for me?",
        "{neu_small} {neu_open} I need to {neu_action}.",
        "The {product} costs {amount} a month and {neu_info}.",
        "I'll be at home after {time} on {date}.",
        "Which {field} do you have for me?",
        "{neu_open} you can reach me {channel} or on {digits}.",
        "The {product} I mentioned {neu_info}. {neu_close}",
        "Do I need to {neu_action} {channel}?",
        "{neu_open} {agent} will call you {times} to confirm the {product}.",
        "Your {product} {neu_status} {date}, and the amount is {amount}.",
        "I have the letter here, it says the {product} {neu_status} {date}.",
        "{neu_open} let me check the {field} on the {product}.",
        "I'm not sure which {department} number to use for my {product}.",
        "The booking for {time} on {date} is under the name {name}.",
        "{neu_small} The {product} {neu_info}.",
    ),
}

_SLOT = re.compile(r"\{(\w+)\}")
_MONTH_SLOT = {"month": _MONTHS}  # a static slot used only inside templates


def _extend(core: dict[str, tuple[str, ...]], extra: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Append, never insert: each core item keeps its index, hence its train/test role."""
    return {**core, **{k: core.get(k, ()) + v for k, v in extra.items()}}


class Grammar(NamedTuple):
    templates: dict[str, tuple[str, ...]]  # per class
    vocab: dict[str, tuple[str, ...]]      # per slot


GRAMMARS: dict[str, Grammar] = {
    "core": Grammar(TEMPLATES, VOCAB),
    "broad": Grammar(_extend(TEMPLATES, EXTRA_TEMPLATES), _extend(VOCAB, EXTRA_VOCAB)),
}
DEFAULT_GRAMMAR = "core"


def _grammar(grammar: str) -> Grammar:
    if grammar not in GRAMMARS:
        raise ValueError(f"unknown sentence grammar {grammar!r}; expected one of {tuple(GRAMMARS)}")
    return GRAMMARS[grammar]


@dataclass(frozen=True)
class Sentence:
    """A generated sentence, its label, and where it came from (for leak checks and reports)."""

    text: str
    sentiment: str
    template_id: str
    split: str


def _stable_seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def _static_vocab(grammar: str = DEFAULT_GRAMMAR) -> dict[str, tuple[str, ...]]:
    return {**_grammar(grammar).vocab, **_MONTH_SLOT}


def _phrase_re(phrase: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w'])" + re.escape(phrase.lower()) + r"(?![\w'])")


@lru_cache(maxsize=None)
def held_out_items(grammar: str = DEFAULT_GRAMMAR) -> dict[str, frozenset[str]]:
    """Slot items reserved for the test split: every 5th item, minus any that train text contains anyway.

    A candidate is dropped when it also occurs as a whole phrase inside a
    template's literal text or inside another (train) item, since train
    sentences would then contain it regardless.
    """
    vocab = _static_vocab(grammar)
    literals = [_SLOT.sub(" | ", t).lower() for ts in _grammar(grammar).templates.values() for t in ts]
    out: dict[str, frozenset[str]] = {}
    for slot, items in vocab.items():
        cands = [it for i, it in enumerate(items) if it and len(items) >= HELD_OUT_EVERY and i % HELD_OUT_EVERY == _HELD_OUT_OFFSET]
        train_items = [it.lower() for it in items if it not in cands]
        other_items = [it.lower() for s, its in vocab.items() if s != slot for it in its]
        keep = []
        for c in cands:
            pat = _phrase_re(c)
            if any(pat.search(text) for text in literals + train_items + other_items):
                continue
            keep.append(c)
        out[slot] = frozenset(keep)
    return out


@lru_cache(maxsize=None)
def _held_out_pattern(grammar: str = DEFAULT_GRAMMAR) -> re.Pattern[str]:
    phrases = sorted({p.lower() for items in held_out_items(grammar).values() for p in items}, key=len, reverse=True)
    return re.compile(r"(?<![\w'])(?:" + "|".join(re.escape(p) for p in phrases) + r")(?![\w'])")


def contains_held_out(text: str, grammar: str = DEFAULT_GRAMMAR) -> bool:
    """True when the text contains a held-out phrase: such text is test-only."""
    return _held_out_pattern(grammar).search(text.lower()) is not None


def is_test_template(sentiment: str, index: int) -> bool:
    """Every 5th template of each class (offset 3) is never used for training."""
    return index % HELD_OUT_EVERY == _HELD_OUT_OFFSET


def _slots(template: str) -> list[str]:
    return _SLOT.findall(template)


def _tidy(text: str) -> str:
    """Collapse the gaps left by empty openers and capitalise each sentence."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.?!])", r"\1", text)
    text = re.sub(r",([.?!])", r"\1", text)
    return re.sub(r"(^|[.?!]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def _fill(template: str, rng: random.Random, vocab: dict[str, tuple[str, ...]]) -> str:
    def one(match: re.Match[str]) -> str:
        slot = match.group(1)
        if slot in _DYNAMIC:
            return _DYNAMIC[slot][0](rng)
        value = rng.choice(vocab[slot])
        return _SLOT.sub(one, value) if "{" in value else value  # items may nest slots (neu_action)

    return _tidy(_SLOT.sub(one, template))


@lru_cache(maxsize=None)
def _train_vocab(grammar: str = DEFAULT_GRAMMAR) -> dict[str, tuple[str, ...]]:
    held = held_out_items(grammar)
    return {s: tuple(i for i in items if i not in held[s]) for s, items in _static_vocab(grammar).items()}


def _templates_for(sentiment: str, split: str, test_only: bool, grammar: str) -> list[tuple[int, str]]:
    ts = list(enumerate(_grammar(grammar).templates[sentiment]))
    if split == "train":
        return [(i, t) for i, t in ts if not is_test_template(sentiment, i)]
    if test_only:
        return [(i, t) for i, t in ts if is_test_template(sentiment, i)]
    return [(i, t) for i, t in ts if not is_test_template(sentiment, i)]


def sample(sentiment: str, split: str, rng: random.Random, max_tries: int = 200,
           grammar: str = DEFAULT_GRAMMAR) -> Sentence:
    """One sentence of a class for a split, obeying the train/test partition described above."""
    if sentiment not in SENTIMENTS or split not in SPLITS:
        raise ValueError(f"unknown sentiment {sentiment!r} or split {split!r}")
    key = sentiment[:3]
    if split == "train":
        vocab, pool = _train_vocab(grammar), _templates_for(sentiment, "train", False, grammar)
    else:
        vocab = _static_vocab(grammar)
        pool = _templates_for(sentiment, "test", rng.random() < 0.5, grammar)
    for _ in range(max_tries):
        index, template = rng.choice(pool)
        text = _fill(template, rng, vocab)
        if contains_held_out(text, grammar) == (split == "test"):
            return Sentence(text, sentiment, f"{key}-{index:02d}", split)
    raise RuntimeError(f"could not draw a {split} {sentiment} sentence in {max_tries} tries")


def generate(n: int, seed: int, split: str = "train", sentiments: Iterable[str] = SENTIMENTS,
             distinct: bool = True, grammar: str = DEFAULT_GRAMMAR) -> list[Sentence]:
    """``n`` sentences, classes in turn (balanced), reproducible from (seed, split).

    With ``distinct`` a repeated sentence is redrawn a few times before being
    accepted, so small corpora do not repeat text.
    """
    classes = list(sentiments)
    rng = random.Random(_stable_seed("sentences", seed, split))
    seen: set[str] = set()
    out: list[Sentence] = []
    for k in range(n):
        sentiment = classes[k % len(classes)]
        s = sample(sentiment, split, rng, grammar=grammar)
        for _ in range(20 if distinct else 0):
            if s.text not in seen:
                break
            s = sample(sentiment, split, rng, grammar=grammar)
        seen.add(s.text)
        out.append(s)
    return out


def reachable(sentiment: str, split: str, grammar: str = DEFAULT_GRAMMAR) -> int:
    """Upper bound on distinct sentences a class/split can produce (product of slot sizes per template)."""
    held = held_out_items(grammar)
    vocab_all = _static_vocab(grammar)
    train_vocab = _train_vocab(grammar)
    vocab = train_vocab if split == "train" else vocab_all

    def size(slot: str, v: dict[str, tuple[str, ...]]) -> int:
        if slot in _DYNAMIC:
            return _DYNAMIC[slot][1]
        return sum(_count(item, v) for item in v[slot])

    def _count(text: str, v: dict[str, tuple[str, ...]]) -> int:
        total = 1
        for slot in _slots(text):
            total *= size(slot, v)
        return total

    total = 0
    for i, t in enumerate(_grammar(grammar).templates[sentiment]):
        if split == "train":
            if not is_test_template(sentiment, i):
                total += _count(t, vocab)
        else:
            has_held = any(held.get(s) for s in _slots(t) if s not in _DYNAMIC)
            if has_held:
                total += _count(t, vocab_all) - _count(t, train_vocab)
    return total


def vader_agreement(n: int = 1000, seed: int = 0, split: str = "train", grammar: str = DEFAULT_GRAMMAR) -> float:
    """Share of sentences where VADER's text label (compound +-0.05) equals ours: a label sanity check."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    hits = 0
    sentences = generate(n, seed, split, grammar=grammar)
    for s in sentences:
        c = analyzer.polarity_scores(s.text)["compound"]
        label = "positive" if c >= 0.05 else "negative" if c <= -0.05 else "neutral"
        hits += label == s.sentiment
    return hits / max(1, len(sentences))
