"""A retrieval-quality set built for Mneme: multi-session personal conversations, questions, and the
ids of the messages that answer them. Evidence is mixed into distractor sessions on the same topics,
so keyword overlap alone and meaning alone each fail on some questions.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

# (evidence message, question). Some questions reuse the evidence's words, some paraphrase it.
PAIRS = [
    ("My sister Clara finally moved to Lisbon last weekend, the new flat is near Alfama",
     "Which city did Clara relocate to?"),
    ("The wifi password for the cabin is bluefish42, don't lose it", "cabin wifi password"),
    ("Dr. Okafor said my cholesterol is a bit high, come back in six months",
     "What did the physician tell me about my blood lipids?"),
    ("Booked the flight to Osaka, JAL 62 departing 11:40 on the 3rd", "flight number to Osaka"),
    ("I think we should rewrite the billing service in Go instead of Python",
     "Which programming language did I suggest for the payments backend?"),
    ("Our landlord agreed to lower the rent to 1450 from next month",
     "How much will the apartment cost us monthly after the negotiation?"),
    ("The kids' school play is on Thursday at 6pm in the gym", "When is the school play?"),
    ("Lena recommended the book Piranesi, she says it's strange but beautiful",
     "What novel did Lena suggest I read?"),
    ("The car's MOT expires on 14 August, need to book a garage",
     "When does the vehicle inspection run out?"),
    ("Grandpa's recipe: two spoons of smoked paprika and a pinch of cumin in the stew",
     "What spices go in grandpa's stew?"),
    ("Tax reference number for the accountant is UTR 8842-1190-77", "UTR tax reference number"),
    ("I'm allergic to penicillin, make sure the clinic knows", "Which antibiotic can't I take?"),
    ("Marco lent me his tent for the festival, return it by the 20th",
     "Whose camping gear do I need to give back?"),
    ("Decided to go with the standing desk from Fully, the walnut top", "Which desk did I choose?"),
    ("Yoga moved to Wednesdays at 7:30 because the studio is renovating",
     "What day is my exercise class now?"),
    ("The plumber quoted 380 euros to replace the boiler valve", "boiler valve quote"),
    ("Priya's baby was born on Monday, a girl named Asha", "What is the name of Priya's newborn daughter?"),
    ("Remember the storage unit code is 5521 and it's unit B17", "storage unit code"),
    ("Switched electricity supplier to Octopus, saving about 30 a month",
     "Which energy company are we with now?"),
    ("The interview with Northwind is on the 9th, second round with the CTO",
     "When is my next job interview and with whom?"),
    ("Mum wants the blue scarf for her birthday, not the green one", "What gift does my mother want?"),
    ("Our team offsite will be in Porto in late May", "Where is the team retreat?"),
    ("Vet said Biscuit needs a tooth removed, surgery costs 240", "How much is the dog's dental operation?"),
    ("My passport expires in February 2027, renew before the trip", "passport expiry date"),
    # Exact strings people look for again: codes, rare names, numbers seen once.
    ("Tracking number for the mattress delivery: 1Z999AA10123456784", "1Z999AA10123456784"),
    ("Zoom meeting ID 893 4412 0057, passcode tulip", "Zoom ID with passcode tulip"),
    ("Error E4012 keeps showing on the dishwasher display", "dishwasher E4012"),
    ("Ordered the Sennheiser HD 560S headphones, arriving Tuesday", "HD 560S"),
    ("Invoice INV-20931 from Brightwater Ltd is overdue", "Brightwater invoice"),
    ("The Airbnb host in Ghent is called Wouter, check-in after 3", "Wouter Ghent"),
    ("Serial of the old laptop: C02XK4LHJG5J, sell it on eBay", "C02XK4LHJG5J"),
    ("Kasia's new number is 07700 900123", "Kasia number"),
    ("Use promo code SPRING25 at checkout for the garden centre", "SPRING25"),
    ("Parking at level P3, bay 118, near the lifts", "P3 bay 118"),
    ("Library book 'The Overstory' is due back on the 2nd", "Overstory due"),
    ("Gate code for the allotment is 4-7-1-9", "allotment gate"),
]

DISTRACTOR_TEMPLATES = [
    "Did you see the match last night? {team} played terribly",
    "Can you pick up {item} on the way home?",
    "Meeting about {project} moved to {day}",
    "I'll be late today, traffic on the {road} is awful",
    "Lunch at {place}? They have a new menu",
    "Reminder: {chore} this weekend",
    "The {project} deadline is tight but doable",
    "Thanks for the {item}, it was lovely",
    "Has anyone seen my {item}? I left it in the kitchen",
    "Flight prices to {city} went up again",
    "{person} says hi and asks about {project}",
    "The doctor's office called about rescheduling for {day}",
    "New password policy at work requires 14 characters",
    "We need to book the {place} for {person}'s party",
    "Rent reminder: transfer before the {day}",
    "The gym is closed on {day} for cleaning",
    "{person} moved the book club to {day}",
    "Car needs new tyres before winter",
    # Look-alikes of the exact strings above: same shape, other values.
    "Tracking number for the {item} delivery: 1Z{code}",
    "Zoom meeting ID {digits}, passcode {word}",
    "Error E{num} showed on the {appliance} again",
    "Invoice INV-{num} from {company} is paid",
    "Use promo code {word}{num2} at checkout",
    "Parking at level P{num1}, bay {num}",
    "Serial of the {appliance}: C02{code}",
    "{person}'s new number is 07700 {num}{num1}",
    "Gate code for the {place} is {num1}-{num1}-{num1}-{num1}",
]
FILL = {
    "team": ["Arsenal", "the Lakers", "Benfica", "the Giants"],
    "item": ["milk", "umbrella", "charger", "scarf", "bread", "keys", "tent", "book"],
    "project": ["the website", "billing", "the migration", "onboarding", "the audit"],
    "day": ["Monday", "Tuesday", "Friday", "the 12th", "the 20th", "Sunday"],
    "road": ["A40", "ring road", "bridge"],
    "place": ["Nando's", "the Thai place", "the community hall", "Luigi's"],
    "chore": ["clean the gutters", "mow the lawn", "sort the recycling"],
    "city": ["Paris", "Berlin", "Osaka", "Lisbon", "Porto"],
    "person": ["Anna", "Ben", "Lena", "Marco", "Priya", "Tom", "Clara"],
    "appliance": ["dishwasher", "washing machine", "laptop", "router", "boiler"],
    "company": ["Brightline Ltd", "Waterside Ltd", "Northwind", "Acme"],
    "word": ["TULIP", "daisy", "SUMMER", "rose", "AUTUMN"],
}
CODE_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
SPEAKERS = ["me", "Anna", "Ben", "Lena", "Marco", "Priya", "Mum"]
CONVERSATIONS = ["WhatsApp: Family", "Slack #team", "Signal: Friends", "WhatsApp: Flatmates", "Notes"]


def build(distractors: int = 2000, seed: int = 7):
    """(messages as JSONL dicts, questions as {"query", "evidence": [ids]})."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    messages = []
    for i in range(distractors):
        text = rng.choice(DISTRACTOR_TEMPLATES)
        text = text.format(**{k: rng.choice(v) for k, v in FILL.items()},
                           code="".join(rng.choice(CODE_CHARS) for _ in range(14)),
                           digits=f"{rng.randrange(100, 999)} {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}",
                           num=rng.randrange(1000, 99999), num1=rng.randrange(1, 9), num2=rng.randrange(10, 99))
        messages.append({"id": f"d{i}", "conversation": rng.choice(CONVERSATIONS),
                         "time": (start + timedelta(minutes=97 * i)).isoformat(),
                         "speaker": rng.choice(SPEAKERS), "text": text})
    questions = []
    for n, (evidence, question) in enumerate(PAIRS):
        at = rng.randrange(len(messages))
        messages.insert(at, {"id": f"e{n}", "conversation": rng.choice(CONVERSATIONS),
                             "time": (start + timedelta(minutes=97 * at + 13)).isoformat(),
                             "speaker": rng.choice(SPEAKERS), "text": evidence})
        questions.append({"query": question, "evidence": [f"e{n}"]})
    return messages, questions
