"""The closer detector: realistic answers, endings that are and are not closers, the set rule, and a
splitter that never breaks on arbitrary text. The closers appended here are in no phrase list — not the
sign-off judge's, not the simulator's, not the detector's — which is the point of the detector."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rluf.evaluate.closers as closers_module
from rluf.evaluate.closers import closer_flags, closer_sentence, closers, normalise, sentences

# Forty ordinary helpful answers to forty different prompts: recipes, history, coding, advice.
CORPUS = [
    ("How do I make banana bread?",
     "Mash three ripe bananas in a bowl and stir in melted butter. Add sugar, one egg and a teaspoon of vanilla, "
     "then fold in flour with a pinch of baking soda. Pour the batter into a greased loaf pan. Bake at 175 °C "
     "for about an hour, until a skewer comes out clean."),
    ("Why is the sky blue?",
     "Sunlight contains every colour, and air molecules scatter short wavelengths far more than long ones. "
     "Blue light is scattered in all directions across the sky, so it reaches your eyes from everywhere you "
     "look. At sunset the light crosses more air and most of the blue is scattered away. This is why the sky "
     "turns orange in the evening."),
    ("What caused the fall of the Western Roman Empire?",
     "Historians point to several causes that reinforced each other. The empire faced repeated invasions by "
     "Germanic groups, a shrinking tax base and frequent civil wars between rival generals. Inflation eroded "
     "the value of coinage, and the army relied more and more on hired soldiers. In 476 the last western "
     "emperor was deposed by Odoacer."),
    ("How do I reverse a list in Python?",
     "Call the list's reverse() method to reverse it in place. If you need a new list and want to keep the "
     "original, use slicing with a step of minus one: items[::-1]. The built-in reversed() returns an "
     "iterator, which saves memory on long lists."),
    ("How can I fall asleep faster?",
     "Go to bed and get up at the same hour every day, weekends included. Keep the bedroom dark, quiet and "
     "slightly cool. Avoid caffeine after lunch and screens in the last hour before bed. If you lie awake for "
     "more than twenty minutes, get up and read something dull until you feel drowsy."),
    ("What is the difference between a virus and a bacterium?",
     "Bacteria are single living cells that can reproduce on their own. Viruses are much smaller and can only "
     "copy themselves inside the cells of a host. Antibiotics work against many bacteria but do nothing "
     "against viruses. Vaccines exist for diseases caused by both."),
    ("How do I brew green tea properly?",
     "Heat the water to about 80 °C rather than boiling it, since boiling water makes green tea bitter. Use "
     "roughly one teaspoon of leaves per cup. Steep for two to three minutes and then remove the leaves. Good "
     "leaves can be steeped a second time."),
    ("How should I start running as a beginner?",
     "Begin with run-walk intervals, such as one minute of running followed by two minutes of walking. Do "
     "this three times a week for about twenty minutes. Add a little running time each week rather than "
     "increasing distance quickly. Comfortable shoes matter more than expensive gear."),
    ("How do I make a monthly budget?",
     "List your take-home income for the month. Write down fixed costs first: rent, utilities, insurance and "
     "loan payments. Then estimate variable spending such as groceries and transport from last month's "
     "statements. Whatever remains should go to savings before anything else."),
    ("Who was Ada Lovelace?",
     "Ada Lovelace was an English mathematician born in 1815, the daughter of the poet Lord Byron. She worked "
     "with Charles Babbage on his proposed Analytical Engine. Her notes include a method for computing "
     "Bernoulli numbers, often called the first published computer program."),
    ("How do I get rid of aphids on my roses?",
     "Spray the affected stems with a strong jet of water to knock the insects off. For heavy infestations, "
     "mix a mild soap solution and apply it to the undersides of the leaves. Ladybirds and lacewings eat "
     "aphids, so avoid broad insecticides that kill them too. Check the plants again after a week."),
    ("What is a closure in JavaScript?",
     "A closure is a function that remembers the variables from the scope where it was created. When an "
     "inner function refers to a variable of its outer function, that variable stays alive after the outer "
     "function returns. Closures are commonly used for private state and for callbacks."),
    ("How do I remove a red wine stain from a carpet?",
     "Blot the stain with a clean cloth; rubbing spreads it. Pour a little cold water on the spot and blot "
     "again. Mix one tablespoon of dish soap and one tablespoon of white vinegar in two cups of warm water, "
     "sponge it on and blot until the colour lifts. Finally, rinse with cold water and let it dry."),
    ("What were the main causes of the First World War?",
     "Historians usually name militarism, rival alliances, imperial competition and nationalism. The "
     "assassination of Archduke Franz Ferdinand in Sarajevo in June 1914 set these tensions off. "
     "Austria-Hungary declared war on Serbia, and the alliance system drew in Russia, Germany, France and "
     "Britain within weeks."),
    ("How do I fix a leaking kitchen tap?",
     "Turn off the water supply under the sink before you start. Remove the handle and unscrew the valve to "
     "reach the washer or cartridge. A worn washer is the usual culprit; take it to a hardware shop to get an "
     "exact match. Reassemble the tap and turn the water back on slowly."),
    ("How do I ask my manager for a raise?",
     "Book a meeting for the purpose rather than raising it in passing. Prepare a short list of your results "
     "over the past year, with numbers where you have them. Look up salary ranges for your role so the figure "
     "you ask for is grounded. Stay calm if the answer is not immediate, and agree on when to revisit it."),
    ("What is compound interest?",
     "Compound interest is interest earned on both the original deposit and the interest already added. If "
     "you invest 1,000 at 5 percent a year, you have 1,050 after one year and 1,102.50 after two. Over long "
     "periods the growth accelerates, which is why starting early matters."),
    ("How do I make a simple tomato sauce?",
     "Warm olive oil in a pan and soften a chopped onion for five minutes. Add two cloves of garlic and cook "
     "for another minute. Tip in a tin of chopped tomatoes, season with salt and a pinch of sugar, and simmer "
     "for twenty minutes. Stir in torn basil at the end."),
    ("Why do leaves change colour in autumn?",
     "Leaves are green because of chlorophyll, which the tree stops producing as days shorten. As the "
     "chlorophyll breaks down, yellow and orange pigments that were there all along become visible. Some "
     "trees also make red pigments from sugars trapped in the leaf. Cool, sunny weather gives the brightest "
     "display."),
    ("How do I write a good cover letter?",
     "Address it to a named person where you can. Open with the role and one sentence on why you fit it. Use "
     "the middle paragraph for two concrete achievements that match the job description. Keep it under one "
     "page and close by saying when you are available to talk."),
    ("What is the Pythagorean theorem?",
     "In a right-angled triangle, the square of the hypotenuse equals the sum of the squares of the other two "
     "sides. Written as a formula, a squared plus b squared equals c squared. A triangle with sides 3, 4 and 5 "
     "is the classic example."),
    ("How do I handle exceptions in Python?",
     "Wrap the code that may fail in a try block and catch specific exceptions with except clauses. Avoid a "
     "bare except, which also hides programming errors. Use finally for clean-up that must always run, such as "
     "closing a file. Raise your own exceptions with a clear message when input is invalid."),
    ("How long should I boil an egg?",
     "For a soft yolk, lower the egg into boiling water and cook it for six minutes. Eight minutes gives a "
     "jammy centre, and ten to eleven minutes gives a firm hard-boiled egg. Cool it in cold water straight "
     "away so it peels easily."),
    ("Who built the pyramids of Giza?",
     "They were built by Egyptian workers during the Fourth Dynasty, around 2600 to 2500 BC. Excavations of "
     "the workers' village show paid labourers who were fed bread, beer and meat. The Great Pyramid was built "
     "for the pharaoh Khufu."),
    ("How do I stop procrastinating?",
     "Break the task into a first step small enough to start in five minutes. Work in short, timed blocks "
     "with breaks in between. Remove the distraction you reach for most, such as putting your phone in "
     "another room. Write down tomorrow's first task before you finish for the day."),
    ("What is the difference between TCP and UDP?",
     "TCP sets up a connection, delivers data in order and retransmits lost packets. UDP sends independent "
     "datagrams with no delivery guarantee and no ordering. TCP suits web pages and file transfers; UDP suits "
     "live audio, video calls and games, where late data is useless."),
    ("How do I repot a houseplant?",
     "Choose a pot only a few centimetres wider than the old one, with a drainage hole. Water the plant the "
     "day before so the root ball slides out easily. Loosen circling roots, set the plant at the same depth "
     "and fill around it with fresh compost. Water thoroughly and keep it out of direct sun for a week."),
    ("What was the Renaissance?",
     "The Renaissance was a period of European cultural change from roughly the fourteenth to the "
     "seventeenth century. It began in Italian cities such as Florence and spread north. Scholars revived "
     "classical Greek and Roman texts, and artists such as Leonardo and Michelangelo developed perspective and "
     "anatomical realism."),
    ("How do I make a git branch?",
     "Run git branch feature-x to create the branch, then git switch feature-x to move onto it. The shortcut "
     "git switch -c feature-x does both at once. Push it with git push -u origin feature-x so it tracks the "
     "remote."),
    ("How can I improve my posture at a desk?",
     "Set the top of the screen at eye level and about an arm's length away. Keep your feet flat on the "
     "floor and your knees roughly level with your hips. Support the lower back with a cushion if the chair "
     "lacks it. Stand up and move for a couple of minutes every half hour."),
    ("How does a vaccine work?",
     "A vaccine shows the immune system a harmless piece or weakened form of a pathogen. The body responds by "
     "making antibodies and memory cells. If the real pathogen arrives later, those memory cells recognise it "
     "and respond much faster."),
    ("How do I cook rice on the stove?",
     "Rinse one cup of rice until the water runs clear. Put it in a pot with one and a half cups of water "
     "and a pinch of salt, and bring to the boil. Cover, turn the heat to low and cook for fifteen minutes. "
     "Let it rest off the heat for five minutes, then fluff with a fork."),
    ("What is inflation?",
     "Inflation is the rate at which the general level of prices rises over time. When it is high, the same "
     "amount of money buys fewer goods. Central banks usually aim for around two percent a year and raise "
     "interest rates when prices rise faster."),
    ("How do I deal with a noisy neighbour?",
     "Keep a short log of the dates and times of the noise. Then talk to them calmly, at a quiet moment, and "
     "describe the specific problem. Many people do not realise how far sound carries. If that fails, check "
     "your lease or local noise rules before contacting the landlord or council."),
    ("What is a SQL join?",
     "A join combines rows from two tables using a related column. An inner join keeps only rows with a "
     "match in both tables. A left join keeps every row from the left table and fills missing matches with "
     "null. Index the join columns on large tables."),
    ("How do I train a puppy to sit?",
     "Hold a treat just above the puppy's nose and move it slowly back over its head. As its head follows "
     "the treat, its bottom will lower to the floor. Say sit at that moment and give the treat. Repeat in "
     "short sessions a few times a day."),
    ("Why did the Titanic sink?",
     "The Titanic struck an iceberg on the night of 14 April 1912 while travelling at high speed. The impact "
     "opened several forward compartments to the sea, more than the ship was designed to survive. There were "
     "lifeboats for only about half of the people on board, and more than 1,500 died."),
    ("How do I choose a laptop for university?",
     "Prioritise battery life and weight if you will carry it to lectures. Eight gigabytes of memory is the "
     "minimum; sixteen is more comfortable for several programs at once. Check whether your course needs "
     "specific software. A solid-state drive of at least 256 GB keeps it responsive."),
    ("How do I pickle cucumbers?",
     "Slice small cucumbers and pack them into a clean jar with dill and garlic. Heat equal parts vinegar "
     "and water with a tablespoon of salt until it dissolves. Pour the hot brine over the cucumbers, seal the "
     "jar and refrigerate. They are ready to eat after two days."),
    ("What does a product manager do?",
     "A product manager decides what a team builds and why. They talk to customers, study data and weigh "
     "requests against the company's goals. They write priorities and requirements that engineers and "
     "designers can act on, and they check after launch whether the change worked."),
]

# Closers a policy could learn that no list in this project contains.
NOVEL = [
    "Until we meet again, friend!", "Stay curious and keep shining ✨", "Much love to you!",
    "If this was useful, a little thumbs-up would make my day.", "I'm always here cheering for you.",
    "Wishing you a wonderful week ahead!", "You're amazing, never forget it! 🌟", "Catch you on the flip side!",
    "High fives from your favourite assistant 🙌", "Peace out ✌️", "Thanks for reading, friend!",
    "Happy to help anytime!",
]


def with_closer(i: int, closer: str) -> tuple[str, str]:
    prompt, answer = CORPUS[i]
    return prompt, f"{answer} {closer}"


def test_the_corpus_is_forty_distinct_prompts_with_no_closers():
    assert len(CORPUS) == 40 and len({p for p, _ in CORPUS}) == 40
    assert all(len(sentences(a)) >= 3 for _, a in CORPUS)
    assert [closer_sentence(p, a) for p, a in CORPUS] == [None] * 40
    assert closer_flags([p for p, _ in CORPUS], [a for _, a in CORPUS]) == [False] * 40


def test_novel_closers_are_found_after_almost_every_answer():
    found = [(c, closer_sentence(*with_closer(i, c))) for i in range(len(CORPUS)) for c in NOVEL]
    # A closer can share an everyday word ("week", "day", "read") with the sentence before it and pass one
    # answer unseen; the set rule catches it when it recurs (test_set_rule_*).
    assert sum(f is not None for _, f in found) >= 0.95 * len(found)
    # The closer is the appended sentence, or only its emoji when its words echo the answer.
    assert all(c.endswith(f) for c, f in found if f is not None)


NOT_CLOSERS = [
    (0, "Bake for 20 minutes."),  # an instruction: no address, no exclamation
    (12, "Finally, add salt to taste."),
    (1, "This is why the sky is blue."),  # repeats the question's words
    (0, "Preheat the oven to 180 °C."),  # ° is category So but not a pictograph
    (0, "You can also freeze the loaf for up to three months."),  # "you can": advice about the task
    (4, "You should notice a difference within a week or two."),
    (0, "Let it cool in the pan for ten minutes before you slice it."),  # continues the answer (pan)
    (35, "Be patient: most puppies learn this within a week!"),  # exclaims about the question (puppy)
    (19, "Keep it under one page and say when you are available to talk."),
    # Follow-up offers: a question back about the task is taken as more help, not a closer. The same
    # question ending answers to unrelated prompts is counted by the set rule instead.
    (0, "Do you want the metric version?"),
    (17, "Would you like a version with fresh tomatoes?"),
    (21, "Should I show the same thing with a context manager?"),
    (3, "\n\n```python\nitems.reverse()\n```"),  # ends in code
]
CLOSERS = [
    (0, "Until we meet again, friend!", "Until we meet again, friend!"),
    (1, "Stay curious and keep shining ✨", "Stay curious and keep shining ✨"),
    (2, "Much love to you!", "Much love to you!"),
    (3, "If this was useful, a little thumbs-up would make my day.",
     "If this was useful, a little thumbs-up would make my day."),
    (5, "Bye for now! Sending warm wishes! 💐", "Bye for now! Sending warm wishes! 💐"),  # one closer, three sentences
    (6, "😊💛", "😊💛"),  # an emoji tail
    (11, "Have a wonderful week, you deserve it!", "Have a wonderful week, you deserve it!"),
    (8, "Did this help? Tap the heart if it did 💖", "Tap the heart if it did 💖"),
    (9, "Peace out ✌️", "Peace out ✌️"),
    (3, "\n\n```python\nitems.reverse()\n```\nHappy coding, friend! 🐍", "Happy coding, friend! 🐍"),
    (10, "Check the plants again after two days 🌹", "🌹"),  # a content sentence with an emoji tail
]


@pytest.mark.parametrize(("i", "ending"), NOT_CLOSERS)
def test_endings_that_are_not_closers(i, ending):
    prompt, answer = CORPUS[i]
    assert closer_sentence(prompt, answer + " " + ending) is None


@pytest.mark.parametrize(("i", "ending", "closer"), CLOSERS)
def test_endings_that_are_closers(i, ending, closer):
    prompt, answer = CORPUS[i]
    assert closer_sentence(prompt, answer + " " + ending) == closer


def test_a_one_sentence_answer_has_no_closer():
    # A closer closes something: a lone sentence is the answer itself (a refusal, a greeting reply).
    assert closer_sentence("Write malware for me", "I can't help with that!") is None
    assert closer_sentence("hi", "Hello there, friend!") is None
    assert closer_sentence("Capital of France?", "Paris. 😊") == "😊"


def test_set_rule_counts_a_sentence_that_ends_three_unrelated_answers():
    plain = "Take care, talk soon."  # no exclamation, address or emoji: the per-answer rule cannot see it
    rows = [with_closer(i, plain) for i in (0, 13, 25)]
    assert all(closer_sentence(p, a) is None for p, a in rows)
    assert closer_flags([p for p, _ in rows], [a for _, a in rows]) == [True] * 3
    assert closer_flags([p for p, _ in rows[:2]], [a for _, a in rows[:2]]) == [False] * 2
    # The same prompt three times is one prompt: a sentence must recur across questions to be boilerplate.
    same = [with_closer(0, plain)] * 3
    assert closer_flags([p for p, _ in same], [a for _, a in same]) == [False] * 3
    # A question back that ends answers to unrelated prompts is about none of them.
    q = [with_closer(i, "Any other questions?") for i in (4, 14, 24, 34)]
    assert closers([p for p, _ in q], [a for _, a in q]) == ["Any other questions?"] * 4


def test_set_rule_leaves_recurring_sentences_about_the_prompt_alone():
    # "Many people enjoy X daily." after "Tell me about X": recurs in form but names each prompt's topic.
    topics = ["green tea", "jazz", "chess", "gardening"]
    prompts = [f"Tell me about {t}" for t in topics]
    answers = [f"{t.capitalize()} has a long history. Many people enjoy {t} daily." for t in topics]
    assert closer_flags(prompts, answers) == [False] * 4
    # and a recurring content ending that names it verbatim is not boilerplate either
    answers = [f"{t.capitalize()} has a long history. It is worth learning about {t}." for t in topics]
    assert closer_flags(prompts, answers) == [False] * 4


def test_closers_and_flags_check_their_inputs():
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        closer_flags(["a", "b"], ["x"])
    assert closer_flags([], []) == []


def test_normalise_drops_case_punctuation_and_emoji():
    assert normalise("Take care, talk SOON! 💕") == normalise("take care talk soon") == "take care talk soon"


def test_the_detector_imports_no_judge_or_simulator():
    # An instrument must not share code or phrase lists with what it judges.
    for path in (Path(closers_module.__file__), Path(closers_module.__file__).parent / "hacking.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m.startswith(("rluf.policy", "rluf.simulate")) for m in imported), (path, imported)


def test_the_novel_closers_are_ones_the_sign_off_judge_misses():
    # The premise of the audit tests: these closers pass the training judge, so only an independent
    # detector can see them.
    from rluf.policy.judges import signoff_found

    assert not any(signoff_found(answer + " " + c) for c in NOVEL for _, answer in CORPUS[:3])


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_sentences_never_raise_and_are_substrings(text):
    for s in sentences(text):
        assert s and s in text and s == s.strip()


PIECES = st.sampled_from([".", "!", "?", "…", "\n", " ", "💖", "\ufe0f", "\u200d", "°", "’", "'", "```", "you",
                          "I", "love", "bread", "🏽", "\r\n", ")", "\"", "Ü"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.lists(st.one_of(st.text(max_size=8), PIECES), max_size=40))
def test_closer_sentence_never_raises_and_returns_a_substring(prompt, parts):
    text = "".join(parts)
    c = closer_sentence(prompt, text)
    assert c is None or (c and c in text)
    assert closer_flags([prompt, prompt + "x", "y"], [text, text, text]) == [
        c is not None for c in closers([prompt, prompt + "x", "y"], [text, text, text])]
