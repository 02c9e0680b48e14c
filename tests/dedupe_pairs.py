"""Sentence pairs that calibrate dedupe's near-duplicate threshold (``services/textmem/dedupe.py``).

``PARAPHRASES`` say the same thing twice in other words, ``RESTATEMENTS`` in the same words:
merging them loses nothing. ``DISTINCT`` and ``ADDED_FACTS`` are pairs a careless dedupe
would merge: the same topic, often the same words, but a different fact (another place,
number, person, time, a negation, a changed preference, one added word). Merging one of those
keeps only the older text, so the newer fact would no longer be found by its words.
Used by ``tests/unit/test_dedupe_rules.py`` and ``benchmarks/bench_dedupe.py --calibrate``.
"""

from __future__ import annotations

PARAPHRASES: list[tuple[str, str]] = [
    ("The user likes pizza.", "User likes pizza"),
    ("The user's favourite colour is blue.", "The user's favorite color is blue."),
    ("Caroline went to the LGBTQ support group yesterday.", "Yesterday Caroline went to the LGBTQ support group."),
    ("Melanie painted a sunrise over the lake.", "Melanie made a painting of a sunrise over the lake."),
    ("The user is allergic to peanuts.", "The user has a peanut allergy."),
    ("The user works as a software engineer at Google.", "The user is a software engineer working at Google."),
    ("User's dog is named Max.", "The user has a dog called Max."),
    ("The user prefers tea over coffee.", "The user would rather drink tea than coffee."),
    ("The user lives in Berlin.", "The user resides in Berlin."),
    ("The user plans to visit Japan next spring.", "Next spring the user plans to visit Japan."),
    ("The user is learning to play the guitar.", "The user is learning guitar."),
    ("The user's sister is called Anna.", "The user has a sister named Anna."),
    ("The user runs every morning before work.", "Every morning before work, the user goes running."),
    ("The user is vegetarian.", "The user follows a vegetarian diet."),
    ("The user's birthday is on March 3.", "The user was born on March 3."),
    ("The user enjoys hiking in the mountains.", "The user likes to go hiking in the mountains."),
    ("The user moved to Toronto for a new job.", "The user relocated to Toronto because of a new job."),
    ("The user has two children.", "The user has 2 kids."),
    ("The user wants to adopt a cat.", "The user would like to adopt a cat."),
    ("The user drives a red Toyota Corolla.", "The user's car is a red Toyota Corolla."),
    ("The user speaks French fluently.", "The user is fluent in French."),
    ("The user is afraid of flying.", "The user has a fear of flying."),
    ("The user reads a book every week.", "Every week the user reads a book."),
    ("The user started a new job at a bakery.", "The user began working at a bakery."),
    ("The user is training for a marathon.", "The user is preparing for a marathon."),
    ("The user's favourite movie is Inception.", "Inception is the user's favourite film."),
    ("The user takes the bus to work.", "The user commutes to work by bus."),
    ("The user is studying medicine at university.", "The user studies medicine at university."),
    ("Caroline is a transgender woman.", "Caroline is a trans woman."),
    ("The user dislikes spicy food.", "The user does not like spicy food."),
    ("I love going to the beach with my family.", "Going to the beach with my family is something I love."),
    ("We went camping at the lake last weekend.", "Last weekend we went camping at the lake."),
    ("My daughter just started kindergarten.", "My daughter has just started kindergarten."),
    ("I finished reading the new Murakami novel.", "I have finished the new Murakami novel."),
    ("Remember to buy milk on the way home.", "Remember to buy milk on your way home!"),
    ("The meeting with the landlord went well.", "The meeting with the landlord went well, actually."),
]

DISTINCT: list[tuple[str, str]] = [
    # another place / person / thing
    ("The user lives in Paris.", "The user lives in London."),
    ("The user's sister is called Anna.", "The user's sister is called Maria."),
    ("The user drives a red Toyota Corolla.", "The user drives a blue Honda Civic."),
    ("The user works as a software engineer at Google.", "The user works as a software engineer at Microsoft."),
    ("The user's dog is named Max.", "The user's cat is named Max."),
    ("The user likes pizza.", "The user likes sushi."),
    ("The user speaks French fluently.", "The user speaks Spanish fluently."),
    ("The user's favourite movie is Inception.", "The user's favourite movie is Interstellar."),
    ("Caroline went to the LGBTQ support group yesterday.", "Melanie went to the LGBTQ support group yesterday."),
    ("The user plans to visit Japan next spring.", "The user plans to visit Italy next spring."),
    ("The user is studying medicine at university.", "The user is studying law at university."),
    # another number or time
    ("The user has two children.", "The user has three children."),
    ("The user has 2 kids.", "The user has 4 kids."),
    ("The user's birthday is on March 3.", "The user's birthday is on March 13."),
    ("The user runs 5 kilometres every morning.", "The user runs 10 kilometres every morning."),
    ("The meeting is at 3pm on Tuesday.", "The meeting is at 5pm on Tuesday."),
    ("The user moved to Toronto in 2019.", "The user moved to Toronto in 2021."),
    ("The user bought 3 apples.", "The user bought 7 apples."),
    ("The user plans to visit Japan next spring.", "The user plans to visit Japan next autumn."),
    # negation and changed preference
    ("The user likes spicy food.", "The user does not like spicy food."),
    ("The user is vegetarian.", "The user is no longer vegetarian."),
    ("The user wants to adopt a cat.", "The user does not want to adopt a cat."),
    ("The user prefers tea over coffee.", "The user prefers coffee over tea."),
    ("I love going to the beach with my family.", "I hate going to the beach with my family."),
    ("The user is afraid of flying.", "The user is not afraid of flying anymore."),
    ("The user enjoys hiking in the mountains.", "The user never goes hiking in the mountains."),
    # same topic, another statement
    ("The user is training for a marathon.", "The user injured a knee while training for a marathon."),
    ("The user is learning to play the guitar.", "The user sold the guitar."),
    ("My daughter just started kindergarten.", "My daughter's kindergarten teacher is very kind."),
    ("We went camping at the lake last weekend.", "We are going camping at the lake next weekend."),
    ("The user started a new job at a bakery.", "The user quit the job at the bakery."),
    ("Melanie painted a sunrise over the lake.", "Melanie painted a sunset over the lake."),
    ("I finished reading the new Murakami novel.", "I started reading the new Murakami novel."),
    ("The user takes the bus to work.", "The user's bus to work was late today."),
    ("The user reads a book every week.", "The user wrote a book last year."),
    ("The meeting with the landlord went well.", "The meeting with the landlord went badly."),
]

# Restatements: the same words give or take case, punctuation, articles, fillers, number words,
# spelling and plurals. What near dedupe merges (besides exact repeats).
RESTATEMENTS: list[tuple[str, str]] = [
    ("The user likes pizza.", "User likes pizza"),
    ("The user has two children.", "the user has 2 children"),
    ("The user's favourite colours are blue and green.", "The user's favorite colors are blue and green!"),
    ("Caroline went to the support group on May 7, 2023.", "Caroline went to a support group on May 7 2023"),
    ("I'm really excited about the trip to Paris!", "I'm excited about the trip to Paris."),
    ("The meeting with the landlord went well.", "The meeting with the landlord went well, actually."),
    ("Melanie signed up for a pottery class.", "melanie signed up for a pottery class"),
    ("User plans to visit the theatre in the city centre.", "The user plans to visit the theater in the city center."),
    ("The user doesn't eat meat.", "The user does not eat meat."),
    ("Oh, the user just adopted three cats.", "The user adopted 3 cats."),
]

# One added word that is a new fact: a wording rule that allowed additions would merge them.
ADDED_FACTS: list[tuple[str, str]] = [
    ("The user likes pizza.", "The user likes pizza with pineapple."),
    ("The user has a dog.", "The user has a dog and a cat."),
    ("The user went to the concert.", "The user almost went to the concert."),
    ("The user is learning Spanish.", "The user is learning Spanish and Italian."),
    ("Caroline moved to Sweden.", "Caroline's mother moved to Sweden."),
    ("The user likes dogs.", "The user's wife likes dogs."),
    ("The user plays tennis.", "The user plays tennis badly."),
    ("Melanie is a painter.", "Melanie is a former painter."),
    ("The user visited Rome.", "The user visited Rome twice."),
    ("I want a new car.", "My brother wants a new car."),
    ("The user ate breakfast.", "The user skipped breakfast."),
    ("The user is vegetarian.", "The user is not vegetarian."),
]

# Fast-mode memories are windows of turns (``role: [time]: text``); the same check on that shape.
WINDOW_PARAPHRASES: list[tuple[str, str]] = [
    (
        "user: I adopted a puppy last week, her name is Luna.\nassistant: Congratulations on adopting Luna!",
        "user: Last week I adopted a puppy, her name is Luna.\nassistant: Congratulations on adopting Luna!",
    ),
    (
        "user: Can you remind me to call my mom tomorrow?\nassistant: Sure, I'll remind you to call your mom tomorrow.",
        "user: can you remind me to call my mom tomorrow\nassistant: Sure, I will remind you to call your mom tomorrow.",
    ),
]

WINDOW_DISTINCT: list[tuple[str, str]] = [
    (
        "user: I adopted a puppy last week, her name is Luna.\nassistant: Congratulations on adopting Luna!",
        "user: I adopted a kitten last week, his name is Milo.\nassistant: Congratulations on adopting Milo!",
    ),
    (
        "user: [2023-05-08 09:00]: Good morning! How are you?\nassistant: [2023-05-08 09:00]: Good morning, I'm well.",
        "user: [2023-05-09 09:00]: Good morning! How are you?\nassistant: [2023-05-09 09:00]: Good morning, I'm well.",
    ),
]
