"""A generated prompt corpus for PII masking: prompts with planted entities, and benign prompts without any.

Deterministic (seeded). Pattern values are valid by their own rules: card numbers pass Luhn,
IBANs carry correct check digits, SSNs avoid the ranges never issued, phone numbers are ones
python-phonenumbers calls valid, so a recognizer that validates cannot excuse a miss.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import phonenumbers

FIRST = ["James", "Maria", "Robert", "Linda", "Michael", "Patricia", "David", "Jennifer", "William", "Elizabeth",
         "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen", "Daniel", "Nancy", "Matthew",
         "Lisa", "Anthony", "Margaret", "Mark", "Sandra", "Steven", "Ashley", "Paul", "Emily", "Andrew", "Donna",
         "Joshua", "Michelle", "Kevin", "Carol", "Brian", "Amanda", "George", "Melissa", "Olivia", "Lucas", "Sophie",
         "Hannah", "Oliver", "Emma", "Noah", "Chloe", "Ethan", "Grace"]
LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
        "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee",
        "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
        "Scott", "Green", "Baker", "Adams", "Nelson", "Hill", "Campbell", "Mitchell", "Roberts", "Carter",
        "Phillips", "Evans", "Turner", "Parker", "Collins", "Edwards", "Stewart", "Morris", "Murphy"]
DOMAINS = ["example.com", "example.org", "mail.example.net", "acme-corp.example", "corp.internal", "uni.example.edu"]

TEMPLATES = [
    "Draft a polite reply to {PERSON} ({EMAIL_ADDRESS}) confirming that the refund to card {CREDIT_CARD} went out.",
    "Summarise this support ticket: customer {PERSON}, phone {PHONE_NUMBER}, says the login page is broken.",
    "Please update the payroll record for {PERSON}: SSN {US_SSN}, IBAN {IBAN_CODE}.",
    "Our firewall blocked {IP_ADDRESS} at 03:12. The owner is {PERSON}, reachable at {EMAIL_ADDRESS}.",
    "Write a short bio for {PERSON}, who leads the data team and can be reached at {PHONE_NUMBER}.",
    "The invoice {ACME_ID} was paid by {PERSON} with card {CREDIT_CARD}; send the receipt to {EMAIL_ADDRESS}.",
    "Translate to French: Dear {PERSON}, your transfer to {IBAN_CODE} has been scheduled.",
    "Is this log line suspicious? Failed password for admin from {IP_ADDRESS} port 52811 ssh2",
    "Create a meeting invite for {PERSON} and {PERSON} about ticket {ACME_ID}.",
    "Check whether {US_SSN} looks like a valid social security number for {PERSON}.",
    "{PERSON} called from {PHONE_NUMBER} asking why the charge on {CREDIT_CARD} was declined.",
    "Extract the contact details: name {PERSON}, email {EMAIL_ADDRESS}, phone {PHONE_NUMBER}, employee id {ACME_ID}.",
    "Rewrite this more formally: hey {PERSON}, pls wire the deposit to {IBAN_CODE} asap, thx",
    "Generate a SQL insert for a user with email {EMAIL_ADDRESS} and last login ip {IP_ADDRESS}.",
    "My manager {PERSON} asked me to review the account of {PERSON}; their SSN is {US_SSN}.",
    "Classify the sentiment: I am {PERSON} and I have been waiting for three weeks, call me on {PHONE_NUMBER}.",
]

BENIGN = [
    "Write a Python function that returns the n-th Fibonacci number using memoisation.",
    "Explain the difference between a process and a thread in two paragraphs.",
    "What is the derivative of x^3 * sin(x)?",
    "Solve for x: 3x + 7 = 22, and show each step.",
    "Refactor this loop into a list comprehension: for i in range(10): out.append(i * i)",
    "Summarise the plot of a heist movie in three sentences, without naming any characters.",
    "Give me five ideas for a team offsite that cost less than a dinner.",
    "How do I configure nginx to redirect all HTTP traffic to HTTPS?",
    "Write a haiku about autumn rain on a tin roof.",
    "What are the trade-offs between B-trees and LSM-trees for write-heavy workloads?",
    "Convert 72 degrees Fahrenheit to Celsius and explain the formula.",
    "In SQL, what does a LEFT JOIN return when the right table has no match?",
    "def add(a, b):\n    return a + b\n\nWrite pytest tests for this function.",
    "Compute the integral of 1/(1+x^2) from 0 to 1.",
    "List the SOLID principles with one sentence each.",
    "What is the time complexity of binary search, and why?",
    "Draft a release note: fixed a crash when the config file is empty; improved start-up time by 30%.",
    "Why does the sky look blue during the day and red at sunset?",
    "Write a bash one-liner that counts the lines in every .py file under src/.",
    "Explain what a monad is to a JavaScript developer.",
    "Give three arguments for and against remote work.",
    "What is 17 multiplied by 23?",
    "Write a regular expression that matches a hexadecimal colour like #1a2b3c.",
    "Describe how TCP slow start works.",
    "Outline a five-step plan to migrate a monolith to microservices.",
    "Prove that the square root of 2 is irrational.",
    "Write a short story opening line set on a train at night.",
    "How does garbage collection work in Go?",
    "const xs = [3, 1, 2]; xs.sort(); // why does this print [1, 2, 3] but [10, 9, 1] sorts oddly?",
    "What is the probability of rolling two sixes with two fair dice?",
    "Suggest a name for a command-line tool that cleans up old git branches.",
    "Explain eventual consistency with an example involving shopping carts.",
    "Write a Dockerfile for a small Flask application.",
    "What is the capital of the country with the largest land area?",
    "Translate 'good morning, how are you?' into Spanish and German.",
    "Calculate the compound interest on 1000 at 5% per year over 10 years.",
    "Write a unit test in Rust for a function that reverses a string.",
    "What are the main differences between HTTP/1.1 and HTTP/2?",
    "Give me a recipe for a vegetarian lasagne for four people.",
    "Explain the CAP theorem in plain language.",
    "for (int i = 0; i < n; i++) { sum += a[i] * b[i]; } // vectorise this loop in C",
    "How many seconds are there in a leap year?",
    "Write a limerick about a cat who learns to code.",
    "What does the 'yield' keyword do in Python generators?",
    "Describe the water cycle for a ten-year-old.",
    "Sort these numbers in ascending order: 42, 7, 19, 3, 88, 23.",
    "What is the difference between TLS 1.2 and TLS 1.3 handshakes?",
    "Write a commit message for a change that adds retries to the HTTP client.",
    "Explain gradient descent and the role of the learning rate.",
    "Is 1001 a prime number? Explain.",
    "How do I set up Visual Studio Code for Python debugging?",
    "Compare Amazon Web Services and Google Cloud for a small startup.",
    "Write a formula in Microsoft Excel that sums column B when column A says 'paid'.",
    "Explain how Apache Kafka partitions topics across brokers.",
    "Is Red Hat Enterprise Linux free to use in production?",
    "What changed between Python 3.11 and Python 3.12?",
    "Write a GitHub Actions workflow that runs tests on every push.",
    "How does PostgreSQL implement MVCC?",
    "Give me a Kubernetes manifest for a deployment with three replicas.",
    "What is the difference between React state and props?",
    "Upgrade instructions: move from version 2.4.1 to 2.5.0 and run the migrations.",
    "Our service listens on port 8080 and the health check is at /healthz; write a readiness probe.",
    "Calculate 15% of 2,340 and round to two decimals.",
    "Write a Terraform block for an S3 bucket with versioning enabled.",
    "Explain the Monty Hall problem and why switching wins.",
    "Describe the rules of chess castling.",
    "Write a cover letter opening for a junior data analyst role.",
    "What is the boiling point of water at 2,000 metres altitude?",
    "Summarise the key ideas of the Agile Manifesto.",
    "Write a function in TypeScript that debounces another function.",
    "How do vaccines train the immune system?",
    "Convert the hex value 0xFF to decimal and binary.",
    "Generate five multiple-choice questions about photosynthesis.",
    "Why is the Pacific Ocean called pacific?",
    "What is a UUID, and when should I use version 4?",
    "Plan a three-day itinerary for a trip to the mountains in spring.",
    "Explain the difference between precision and recall.",
    "Write a SQL query that finds duplicate rows by email column.",
    "How much memory does a 1024 x 1024 float32 matrix need?",
    "Describe the lifecycle of a star like the Sun.",
]


@dataclass
class Prompt:
    text: str
    planted: list[tuple[str, str]] = field(default_factory=list)  # (entity, value)


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2 == 0:
            n *= 2
            n -= 9 if n > 9 else 0
        total += n
    return str((10 - total % 10) % 10)


def card(rng: random.Random) -> str:
    body = rng.choice(["4", "51", "52", "53", "54", "55"])
    body += "".join(rng.choice("0123456789") for _ in range(15 - len(body)))
    number = body + _luhn_digit(body)
    style = rng.choice(["plain", "spaced", "dashed"])
    if style == "plain":
        return number
    sep = " " if style == "spaced" else "-"
    return sep.join(number[i:i + 4] for i in range(0, 16, 4))


def iban(rng: random.Random) -> str:
    country, length = rng.choice([("DE", 18), ("GB", 18), ("FR", 23), ("NL", 14)])
    if country == "GB":
        bban = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))
        bban += "".join(rng.choice("0123456789") for _ in range(14))
    elif country == "NL":
        bban = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))
        bban += "".join(rng.choice("0123456789") for _ in range(10))
    else:
        bban = "".join(rng.choice("0123456789") for _ in range(length))
    rearranged = bban + country + "00"
    numeric = "".join(str(int(c, 36)) for c in rearranged)
    check = 98 - int(numeric) % 97
    value = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        return " ".join(value[i:i + 4] for i in range(0, len(value), 4))
    return value


def ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def phone(rng: random.Random) -> str:
    while True:
        region = rng.choice(["US", "US", "US", "GB"])
        if region == "US":
            number = f"{rng.choice([212, 415, 617, 303, 512, 206])}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
            parsed = phonenumbers.parse(number, "US")
        else:
            number = f"20{rng.randint(7000, 8999)}{rng.randint(0, 9999):04d}"
            parsed = phonenumbers.parse(number, "GB")
        if not phonenumbers.is_valid_number(parsed):
            continue
        style = rng.choice([phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.NATIONAL])
        return phonenumbers.format_number(parsed, style)


def ip(rng: random.Random) -> str:
    first = rng.choice([23, 45, 81, 104, 185, 203])
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def email(rng: random.Random) -> str:
    first, last = rng.choice(FIRST).lower(), rng.choice(LAST).lower()
    local = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last}{rng.randint(1, 99)}"])
    return f"{local}@{rng.choice(DOMAINS)}"


MAKERS = {"PERSON": person, "EMAIL_ADDRESS": email, "PHONE_NUMBER": phone, "CREDIT_CARD": card, "US_SSN": ssn,
          "IBAN_CODE": iban, "IP_ADDRESS": ip, "ACME_ID": lambda rng: f"ACME-{rng.randint(0, 999999):06d}"}


def pii_prompts(count: int = 240, seed: int = 7) -> list[Prompt]:
    """``count`` prompts, each with planted entities, cycling through the templates."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        template = TEMPLATES[i % len(TEMPLATES)]
        prompt = Prompt("")
        text = template
        while "{" in text:
            start = text.index("{")
            entity = text[start + 1:text.index("}", start)]
            value = MAKERS[entity](rng)
            prompt.planted.append((entity, value))
            text = text[:start] + value + text[text.index("}", start) + 1:]
        prompt.text = text
        out.append(prompt)
    return out


def benign_prompts() -> list[Prompt]:
    return [Prompt(text) for text in BENIGN]
