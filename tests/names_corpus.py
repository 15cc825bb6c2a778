"""A corpus for person-name masking: names the shipped lists were not made from, in prompts the
recognizers were not written for, and benign prompts beside them; a DEV split to look at and tune on, and a
TEST split (``tests/names_heldout.py``) only run to report.

Names come from sources independent of Warden's lists (Faker's): mimesis (its own per-locale data; DEV and TEST
take different locales and seeds) and, for cultures no mimesis locale covers, the most frequent given and family
names per country in names-dataset 3.3.1, copied here (abbreviations such as "Md" left out) so the tests need only
mimesis; DEV and TEST take different countries. Seeded: the same corpus every run.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from mimesis import Person
from mimesis.locales import Locale

from tests import names_heldout as heldout
from tests.corpus import benign_prompts

MIMESIS_LOCALES = ["it", "es", "pt-br", "pl", "de", "sv", "tr", "hu", "da", "et", "en"]

# names-dataset 3.3.1: top-ranked Latin-script given and family names per country.
COUNTRY_NAMES: dict[str, tuple[list[str], list[str]]] = {
    "PH": (["Alvin", "Jocelyn", "Jayson", "Maricel", "Carlo", "Noel", "Rowena", "Arlene", "Jerome", "Arnel", "Randy",
            "Kristine", "Marites", "Marilou", "Janice", "Hazel", "Louie", "Rosemarie", "Rommel", "Jessa"],
           ["Reyes", "Dela Cruz", "Bautista", "Villanueva", "De Guzman", "Aquino", "Francisco", "Santiago", "De Leon",
            "Tolentino", "Mercado", "Soriano", "Domingo", "Dizon", "Valdez", "Manalo", "Del Rosario", "Pascual",
            "Enriquez", "Ocampo"]),
    "MY": (["Muhammad", "Siti", "Nurul", "Ahmad", "Mohamad", "Khairul", "Noor", "Amirul", "Amir", "Aiman", "Farah",
            "Hafiz", "Fatin", "Ismail", "Azlan", "Syafiq"],
           ["Ahmad", "Ismail", "Abdullah", "Chong", "Ibrahim", "Rahman", "Othman", "Aziz", "Yong", "Hashim", "Yusof",
            "Leong", "Zakaria", "Liew", "Ramli", "Goh"]),
    "EG": (["Ahmed", "Mohamed", "Mahmoud", "Mostafa", "Amr", "Omar", "Aya", "Eslam", "Sara", "Eman", "Asmaa",
            "Khaled", "Alaa", "Mona", "Nada", "Esraa", "Fatma", "Heba", "Nour", "Hossam"],
           ["Mohamed", "Ahmed", "Mahmoud", "Hassan", "Mostafa", "Adel", "Gamal", "Salah", "Khaled", "Ashraf", "Magdy",
            "Ibrahim", "Saad", "Sayed", "Samir", "Hamdy", "Elsayed", "Tarek", "Fathy", "Samy"]),
    "MA": (["Rachid", "Youssef", "Ayoub", "Hamza", "Fatima", "Hicham", "Khalid", "Khadija", "Brahim", "Yassine",
            "Hamid", "Amine", "Karim", "Adil", "Salma", "Jamal"],
           ["Alaoui", "Tazi", "Alami", "Idrissi", "Bennani", "Berrada", "Chraibi", "Benjelloun", "Lahlou", "Filali",
            "Kettani", "Sqalli", "Amrani", "Ouazzani", "Benali", "Ziani"]),
    "ET": (["Seid", "Jemal", "Tesfaye", "Biruk", "Kedir", "Mesfin", "Habtamu", "Girma", "Eshetu", "Ashenafi",
            "Tilahun", "Desalegn", "Bekele", "Belete", "Tariku", "Dereje", "Zerihun", "Alemu", "Biniyam", "Melese"],
           ["Kedir", "Eshetu", "Yimer", "Yimam", "Endris", "Awel", "Yesuf", "Getahun", "Birhanu", "Gashaw", "Arega",
            "Gemechu", "Seifu", "Gizaw", "Adugna", "Kassaw", "Dinku", "Tamirat", "Bedru", "Nigatu"]),
    "BD": (["Mohammad", "Sumon", "Saiful", "Hasan", "Kazi", "Arif", "Masud", "Imran", "Shamim", "Mamun", "Rasel",
            "Sohel", "Rubel", "Nusrat", "Tanvir", "Mehedi", "Nazmul", "Rakib", "Kamrul"],
           ["Islam", "Ahmed", "Khan", "Hossain", "Rahman", "Uddin", "Chowdhury", "Alam", "Das", "Miah", "Mahmud",
            "Saha", "Haque", "Biswas", "Hossen", "Sarker", "Jahan", "Sarkar", "Sultana"]),
    "CM": (["Christelle", "Emmanuel", "Alain", "Sandrine", "Carine", "Serge", "Franck", "Rodrigue", "Mireille",
            "Fabrice", "Yannick", "Solange", "Nadine", "Stephane", "Thierry", "Bertrand"],
           ["Ngono", "Kengne", "Fotso", "Moussa", "Kenfack", "Dongmo", "Oumarou", "Kamdem", "Bouba", "Kamga",
            "Atangana", "Njoya", "Adamou", "Hamadou", "Tchinda", "Mengue", "Talla", "Kameni", "Onana"]),
    "IN": (["Rahul", "Ajay", "Sanjay", "Sunil", "Rajesh", "Deepak", "Ravi", "Amit", "Vijay", "Anil", "Manoj", "Rakesh",
            "Rohit", "Santosh", "Mukesh", "Ramesh", "Dinesh", "Suresh", "Ashok", "Pankaj", "Manish", "Vishal"],
           ["Kumar", "Singh", "Khan", "Sharma", "Yadav", "Patel", "Gupta", "Ansari", "Thakur", "Rajput", "Shaikh",
            "Patil", "Verma", "Chauhan", "Mishra", "Sahu", "Choudhary", "Rana", "Parmar"]),
}

# Prompts as people write them; {first}/{last} (and {first2}/{last2}, {first3}/{last3}) are one person each.
TEMPLATES = [
    "Summarise the complaint from {first} {last} about the delayed shipment and suggest a reply.",
    "Can you rewrite this so it sounds friendlier? {first}, the report is late again and I need it by Friday.",
    "Meeting notes: attendees {first} {last}, {first2} {last2} and {first3} {last3}. Action items are below.",
    "{first} {last} joined the team in March as a backend engineer. Write a short welcome message.",
    "Write an email to {first} explaining that the server migration moves to next week.",
    "Turn this CSV row into JSON: {first},{last},42,engineering",
    '{{"customer": {{"first_name": "{first}", "last_name": "{last}", "plan": "pro"}}}} validate this payload.',
    "Is this sentence grammatical? 'Yesterday {first} and I went to the market.'",
    "The ticket was opened by {last}, {first} (account manager) and escalated twice.",
    "Please proofread: Thank you for your help last week, it made a real difference. Kind regards, {first} {last}",
    "Letter:\n\nDear Ms {last},\n\nWe are pleased to offer you the position.\n\nSincerely,\nHR",
    "Who should review the pull request, {first} or {first2}?",
    "List of speakers:\n- {first} {last}\n- {first2} {last2}\n- {first3} {last3}\nWrite a one-line intro for each.",
    "Draft a LinkedIn recommendation for {first} {last}, who mentored me for two years.",
    "I spoke with {first} {last} on the phone; they want a quote for 300 units.",
    "The commit 'Fix null pointer in parser' was authored by {first} {last}. Explain what the change might do.",
    "Create a birthday card message for my colleague {first}.",
    "From the on-call log: {first} {last} restarted the database at 2am after the disk filled up.",
    "Interview schedule: 10:00 {first} {last}, 11:30 {first2} {last2}. Write reminder texts.",
    "Dr. {last} recommended physiotherapy twice a week; draft a note to the insurer.",
    "Format as a table: name={first} {last}; role=designer; start=2024-02-01",
    "{first} wrote: 'the build is green again'. Reply that we can release today.",
    "hey, can u check with {first} {last} if the invoice went out? thx",
    "Our landlord, Mr. {last}, has not fixed the heating for a month. Write a formal complaint.",
    "Assign the three open bugs to {first2}, {first} and {first3} and write the standup summary.",
    "Please translate into German: My name is {first} {last} and I live near the station.",
    "The patient {first} {last}, 54, reports chest pain since Tuesday. Summarise for the handover.",
    "Rank these candidates by experience: {first} {last} (5 years), {first2} {last2} (8 years).",
    "Write a toast for the wedding of {first} and {first2}.",
    "Reply to this message: 'Hi, this is {first} from the accounts team, could you resend the figures?'",
    "Sign the cover letter with my name, {first} {last}, and keep it under 200 words.",
    "Contact: {last} {first}, Finance. Add this person to the vendor list.",
]

BENIGN = [
    "How do I set up Visual Studio Code for remote development over SSH?",
    "Plan a four-day trip to San Francisco with one day in Napa Valley.",
    "What is the best neighbourhood to stay in New York for a first visit?",
    "Compare the Samsung Galaxy S24 and the Google Pixel 8 for photography.",
    "Explain how Apache Spark shuffles data between executors.",
    "Write a Python script that resizes every JPEG in a folder with Pillow.",
    "Why is Buenos Aires called the Paris of South America?",
    "Is Rio de Janeiro or São Paulo better for a business trip?",
    "Summarise the causes of the French Revolution in five bullet points.",
    "Give me a packing list for hiking Mount Kilimanjaro in August.",
    "How does Microsoft Teams differ from Slack for large organisations?",
    "Write a SQL query that returns the top five products by revenue per month.",
    "What does the Rust borrow checker prevent, with an example?",
    "Explain the Julia language's multiple dispatch to a Python developer.",
    "Set up Ruby on Rails with PostgreSQL on macOS using Homebrew.",
    "Describe the climate of Cape Town compared with Johannesburg.",
    "How many calories does a 30-minute swim burn on average?",
    "Which is older, the Great Wall of China or the Colosseum in Rome?",
    "Integrate x * e^x from 0 to 1 and show each step.",
    "What is the eigenvalue decomposition of a 2x2 symmetric matrix?",
    "Install Home Assistant on a Raspberry Pi 4 and add a Zigbee dongle.",
    "Recommend three museums in Florence and how long to spend in each.",
    "Write a Go function that merges two sorted slices.",
    "Explain the difference between Docker Compose and Kubernetes for a small team.",
    "What is the population of Lagos compared with Cairo?",
    "Describe the Amazon Alexa skill development workflow.",
    "How do I export a Figma design to SVG without losing fonts?",
    "Write a Bash loop that renames files from .jpeg to .jpg.",
    "Explain how the Tesla Model 3 battery preconditioning works in winter.",
    "What are good day trips from Lisbon by train?",
    "Translate 'the meeting is postponed until Thursday' into Italian, Dutch and Polish.",
    "Show the Big-O of quicksort in the best, average and worst case.",
    "Configure Grafana to alert when Prometheus reports CPU over 90%.",
    "Why does Los Angeles have so much traffic compared with Tokyo?",
    "Write a JavaScript function that formats a date as YYYY-MM-DD.",
    "What is the difference between MariaDB and MySQL today?",
    "Explain Bayes' theorem with a medical test example.",
    "Describe the route of the Trans-Siberian Railway from Moscow to Vladivostok.",
    "How do I use Adobe Photoshop's content-aware fill?",
    "Compare Oracle Database licensing with PostgreSQL for a mid-sized company.",
    "Write a haiku about the Baltic Sea in winter.",
    "What is the capital of New Zealand, and why not Auckland?",
    "Explain what Jenkins pipelines are and how they compare with GitHub Actions.",
    "Suggest a vegetarian menu for a dinner party of eight.",
    "Convert this JSON to YAML: {\"name\": \"service\", \"replicas\": 3, \"port\": 8080}",
    "Solve the system: 2x + y = 7, x - y = 2.",
    "How does Santiago de Chile's metro compare with the Mexico City metro?",
    "Write a unit test with Jest for a function that adds two numbers.",
    "What should I see in Kraków and Gdańsk in three days?",
    "Explain the rules of cricket in simple terms.",
    "Why did Nokia lose the smartphone market to Apple and Android?",
    "Create a Makefile with build, test and clean targets for a C project.",
    "What is the difference between Cassandra and MongoDB for time-series data?",
    "Give five tips for learning Spanish in six months.",
    "How is the Victoria line of the London Underground automated?",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\nAdd push, pop and peek methods.",
    "Describe the architecture of the Sagrada Família in Barcelona.",
    "Explain the difference between a Roth IRA and a traditional IRA.",
    "What are the visa rules for visiting Costa Rica from the European Union?",
    "Write a regex that validates a UK postcode like SW1A 1AA.",
    "How do Jupyter Notebook and JupyterLab differ?",
    "What makes the Swiss Alps good for skiing in March?",
    "Calculate the standard deviation of 4, 8, 15, 16, 23, 42.",
    "Recommend a mechanical keyboard for programming under 100 euros.",
    "How do I enable dark mode in Mozilla Firefox on Linux?",
    "Explain the plot structure of a classic detective novel without naming characters.",
    "What is the history of the Port of Rotterdam?",
    "Write an nginx location block that proxies /api to localhost:5000.",
    "Why is the Dead Sea so salty?",
    "How does Spotify recommend songs in Discover Weekly?",
    "Explain the Chinese Remainder Theorem with a small example.",
    "Draft a polite out-of-office reply for the Christmas holidays.",
    "Describe the main sights of Marrakesh and Fes for a first-time visitor.",
    "Write a TypeScript interface for an order with items, totals and a shipping address.",
    "Is Kotlin or Swift easier to learn for mobile development?",
    "What is the tallest building in Kuala Lumpur?",
    "Plan a budget for a week in Manila and Cebu.",
    "Summarise how the Nile floods shaped ancient Egyptian farming.",
    "Explain the difference between Addis Ababa's and Nairobi's climates.",
]

# More benign prompts, written while the name-shape rules were tuned (DEV): products, tools, places, dishes and
# festivals whose names are no English word, things compared, eponyms.
MORE_BENIGN = [
    "Set up Grafana and Loki to collect logs from a Kubernetes cluster.",
    "Write a Terraform module that creates an S3 bucket with versioning.",
    "Compare Ansible, Puppet and Chef for configuration management.",
    "How do I tune Nginx worker processes for a 4-core machine?",
    "Explain Kafka consumer groups and partition rebalancing.",
    "Use Pandas to pivot a table of sales by region and quarter.",
    "Why does NumPy broadcasting fail for shapes (3, 4) and (3,)?",
    "Build a Django view that paginates a queryset of articles.",
    "Should I learn Vue or Svelte for a small dashboard?",
    "Plan three days in Reykjavik with a trip to the Golden Circle.",
    "What is there to do in Ljubljana and Lake Bled in autumn?",
    "Is Tbilisi or Yerevan a better base for a week of hiking?",
    "Suggest an itinerary for Chiang Mai and Chiang Rai.",
    "How do I get from Hanoi to Hoi An by train?",
    "What are the best beaches in Zanzibar in July?",
    "Give me a recipe for tiramisu without raw eggs.",
    "How is Pad Thai different from Pad See Ew?",
    "Explain how to make Shakshuka for four people.",
    "Which ingredients go into Bibimbap and Kimchi Jjigae?",
    "Summarise the history of Real Madrid and Bayern Munich in the Champions League.",
    "Why is Galatasaray's stadium called Hell?",
    "Explain Dijkstra's algorithm with a small graph.",
    "What is a Fourier transform used for in audio processing?",
    "Derive the Schrödinger equation for a particle in a box.",
    "How does the Kalman filter estimate position from noisy GPS data?",
    "Explain the Pythagorean theorem to a ten-year-old.",
    "What happens during Diwali and how long does it last?",
    "When does Ramadan start this year and how is Eid celebrated?",
    "Plan a visit to Oktoberfest in Munich on a budget.",
    "Compare Xiaomi and Huawei phones for battery life.",
    "Is Lidl or Aldi cheaper for weekly groceries in Germany?",
    "How do I assemble an Ikea Malm dresser safely?",
    "Set up a Shopify store that ships to Canada and Mexico.",
    "What are Airbnb's rules for hosts in Barcelona?",
    "Translate 'good morning' into Swahili, Tagalog and Amharic.",
    "What is the difference between Hinduism and Buddhism on rebirth?",
    "Describe the Hagia Sophia's history under the Ottomans.",
    "Why is Machu Picchu at risk from tourism?",
    "What is the best time to see the Northern Lights in Tromsø?",
    "Explain how Bitcoin mining difficulty adjusts.",
    "Write a Kotlin data class for a user profile with Moshi annotations.",
    "Configure Keycloak as an OIDC provider for a Spring Boot app.",
    "What is the difference between Redis Streams and RabbitMQ?",
    "How do Zigbee and Z-Wave compare for smart home sensors?",
    "Explain Lamport clocks and vector clocks.",
    "Summarise the plot of Don Quixote in five sentences.",
    "Why is the Mona Lisa so famous?",
    "What are the main islands of the Galápagos?",
    "Recommend a route along the Amalfi Coast by bus.",
    "Explain the Haber process and why it matters for fertiliser.",
    "How does Tailwind CSS differ from Bootstrap?",
    "What does Kubernetes' kubelet do on each node?",
    "Write a Jenkinsfile that builds a Maven project and runs tests.",
    "How do I convert a Word document to Markdown with Pandoc?",
    "What is the Mandelbrot set and how do I plot it?",
    "Explain Gödel's incompleteness theorems simply.",
    "What is the difference between Tokyo's Shinkansen lines?",
    "Compare Duolingo and Babbel for learning Portuguese.",
    "How do I migrate from Heroku to Fly.io?",
    "Make a packing list for a trek to Everest Base Camp via Namche Bazaar.",
]

@dataclass
class NamePrompt:
    text: str
    origin: str  # the mimesis locale or names-dataset country the names come from
    template: str
    people: list[tuple[str, str]] = field(default_factory=list)  # (given, family) as planted; "" where not


@dataclass(frozen=True)
class Split:
    """One part of the corpus: where its names come from, the templates they are planted in, benign prompts."""

    locales: list[str]
    countries: dict[str, tuple[list[str], list[str]]]
    templates: list[str]
    benign: list[str]
    seed: int


def split(name: str) -> Split:
    """``"dev"`` (tune on it) or ``"test"`` (held out: report only)."""
    if name == "dev":
        return Split(MIMESIS_LOCALES, COUNTRY_NAMES, TEMPLATES,
                     BENIGN + MORE_BENIGN + [p.text for p in benign_prompts()], 11)
    if name == "test":
        return Split(heldout.MIMESIS_LOCALES, heldout.COUNTRY_NAMES, heldout.TEMPLATES, heldout.BENIGN, 2024)
    raise ValueError(name)


def _person(origin: str, countries: dict[str, tuple[list[str], list[str]]], rng: random.Random) -> tuple[str, str]:
    if origin in countries:
        firsts, lasts = countries[origin]
        return rng.choice(firsts), rng.choice(lasts)
    person = Person(Locale(origin), seed=rng.randrange(2**32))
    return person.first_name(), person.last_name()


def name_prompts(part: Split, per_origin: int = 16) -> list[NamePrompt]:
    """``per_origin`` prompts for each mimesis locale and names-dataset country of ``part``, cycling through its
    templates."""
    rng = random.Random(part.seed)
    out = []
    for n, origin in enumerate(part.locales + list(part.countries)):
        for i in range(per_origin):
            template = part.templates[(n * 7 + i) % len(part.templates)]
            values: dict[str, str] = {}
            people = []
            for suffix in ("", "2", "3"):
                given, family = _person(origin, part.countries, rng)
                values["first" + suffix], values["last" + suffix] = given, family
                planted = (given if f"{{first{suffix}}}" in template else "",
                           family if f"{{last{suffix}}}" in template else "")
                if any(planted):
                    people.append(planted)
            out.append(NamePrompt(template.format(**values), origin, template, people))
    return out


def leaked_people(prompt: NamePrompt, sent: str) -> list[tuple[str, str]]:
    """The planted people any part of whose name reaches ``sent`` as a whole word (a part that is also a word of
    the template itself does not count)."""
    template_words = set(re.findall(r"\w+", re.sub(r"\{\w+\}", " ", prompt.template)))
    def reaches(word: str) -> bool:
        return word not in template_words and re.search(rf"(?<!\w){re.escape(word)}(?!\w)", sent) is not None
    return [person for person in prompt.people if any(reaches(word) for part in person for word in part.split())]
