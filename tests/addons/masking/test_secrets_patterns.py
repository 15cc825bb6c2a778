"""Secrets in the default rules: vendor tokens by their shapes (API_KEY, JWT), values named as secrets and
connection-string passwords (SECRET). Every token here is made up, drawn at random in the vendor's format."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from addons.masking.operators import Masker
from addons.masking.pseudonyms import Vault
from addons.masking.recognizers import engine_spec, pattern_scanner
from addons.masking.recognizers.secrets import SecretRecognizer, entropy
from addons.rules.masking import Masking
from tests.corpus import benign_prompts

DEFAULT_RULES = Path(__file__).resolve().parents[3] / "rules" / "default.yaml"
SECRET_ENTITIES = {"API_KEY", "JWT", "SECRET"}
rng = random.Random(11)
ALNUM = string.ascii_letters + string.digits


def draw(alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt() -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": draw(string.digits, 10), "iat": 1700000000 + rng.randint(0, 10**6)}).encode())
    return f"{header}.{payload}.{b64url(rng.randbytes(32))}"


ACCOUNT_KEY = base64.b64encode(rng.randbytes(64)).decode()
SAS_SIG = quote(base64.b64encode(rng.randbytes(32)).decode(), safe="")
PASSWORD = draw(ALNUM, 14)

UPPER = string.ascii_uppercase + string.digits
SLACK = [f"xox{kind}-{draw(string.digits, 11)}-{draw(string.digits, 13)}-{draw(ALNUM, 24)}" for kind in "bpars"]
SLACK_WEBHOOK = f"https://hooks.slack.com/services/T{draw(UPPER, 8)}/B{draw(UPPER, 10)}/{draw(ALNUM, 24)}"
GOOGLE = "AIza" + draw(ALNUM + "_-", 35)
STRIPE = [prefix + draw(ALNUM, 24) for prefix in ("sk_live_", "sk_test_", "rk_live_", "rk_test_")]
GITHUB = [prefix + draw(ALNUM, 36) for prefix in ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")]
GITHUB_PAT = f"github_pat_{draw(ALNUM, 22)}_{draw(ALNUM, 59)}"
AZURE_STORAGE = f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={ACCOUNT_KEY};EndpointSuffix=core.net"
SAS_URL = f"https://acme.blob.core.windows.net/c/a.pdf?sv=2022-11-02&ss=b&sp=r&se=2026-01-01T00:00:00Z&sig={SAS_SIG}"
URL_PASSWORD = quote("p@ss:" + draw(ALNUM, 10), safe="")
SCHEMES = ("postgres", "postgresql", "mysql", "mongodb", "mongodb+srv", "redis", "rediss", "amqp")
GENERIC = {"password": "hunter2" + draw(ALNUM, 6), "api_key": draw(ALNUM, 32), "SECRET": draw(ALNUM + "+/", 40),
           "client_secret": draw(ALNUM, 28), "bearer": draw(ALNUM + "-_", 40), "mysql": draw(ALNUM + "!@#%^*", 12),
           "aws": draw(ALNUM + "+/", 40)}

# (text, the secret in it): each secret must be masked as one of SECRET_ENTITIES.
PLANTED = [
    *[(f"Our bot uses {token} to post to #ops", token) for token in SLACK],
    (f"POST to {SLACK_WEBHOOK} on failure", SLACK_WEBHOOK),
    (f"maps client: key={GOOGLE}&callback=init", GOOGLE),
    *[(f"stripe.api_key = '{key}'", key) for key in STRIPE],
    (AZURE_STORAGE, ACCOUNT_KEY),
    (SAS_URL, SAS_SIG),
    *[(f"git clone https://{token}@github.com/acme/app", token) for token in GITHUB],
    (f"GH_TOKEN={GITHUB_PAT}", GITHUB_PAT),
    *[(f"Why does this token fail? {token}", token) for token in [jwt()]],
    *[(f"{scheme}://app:{PASSWORD}@db.internal.example:5432/orders", PASSWORD) for scheme in SCHEMES],
    (f"DATABASE_URL=postgres://svc:{URL_PASSWORD}@10.0.0.5/app", URL_PASSWORD),
    (f"password: {GENERIC['password']}", GENERIC["password"]),
    (f'api_key="{GENERIC["api_key"]}"', GENERIC["api_key"]),
    (f"SECRET={GENERIC['SECRET']}", GENERIC["SECRET"]),
    (f'{{"client_secret": "{GENERIC["client_secret"]}"}}', GENERIC["client_secret"]),
    (f"curl -H 'Authorization: Bearer {GENERIC['bearer']}' https://api.example.com", GENERIC["bearer"]),
    (f"mysql -u root --password '{GENERIC['mysql']}' shop", GENERIC["mysql"]),
    (f"export AWS_SECRET_ACCESS_KEY={GENERIC['aws']}", GENERIC["aws"]),
]

BENIGN = [
    f"The request id is {uuid.UUID(int=rng.getrandbits(128))}.",
    f"Revert commit {hashlib.sha1(b'warden').hexdigest()} and rebase.",
    f"sha256: {hashlib.sha256(b'release').hexdigest()}  warden-1.2.0.tar.gz",
    "Set the password in config.yaml:\n  password: <PASSWORD>\n  api_key: <YOUR_API_KEY>",
    "password: ${DB_PASSWORD}\ntoken: {{ secrets.GITHUB_TOKEN }}\nsecret: ********",
    "Connect with postgres://user:password@localhost:5432/mydb, replacing the password.",
    f"<img src=\"data:image/png;base64,{base64.b64encode(random.Random(3).randbytes(3000)).decode()}\">",
    "SECRET_KEY = os.environ['SECRET_KEY']\ntoken = tokenizer.encode(text)\npassword = getpass()",
    "if password == confirm: max_tokens=1024; primary_key = True; cache_key = f'user:{uid}'",
    "Reset your password: click the link in the e-mail. The key: rotate it every 90 days.",
    "const apiKey = process.env.API_KEY; // never commit a token",
    "Explain how JWTs work: header.payload.signature, each part base64url encoded.",
]


@pytest.fixture(scope="module")
def masking() -> Masking:
    return Masking.model_validate(yaml.safe_load(DEFAULT_RULES.read_text())["masking"])


@pytest.fixture(scope="module")
def scan(masking):
    return pattern_scanner(engine_spec(masking))


def masked_as(scan, text: str, value: str) -> set[str]:
    """The entities of the spans that cover all of ``value`` in ``text``."""
    at = text.index(value)
    return {entity for entity, start, end, score in scan(text)
            if start <= at and at + len(value) <= end and score >= 0.5}


@pytest.mark.parametrize("text, secret", PLANTED, ids=[t[:40] for t, _ in PLANTED])
def test_planted_secrets_are_masked(scan, text: str, secret: str) -> None:
    assert masked_as(scan, text, secret) & SECRET_ENTITIES, text


def test_a_connection_string_loses_its_credentials_only(masking, scan) -> None:
    text = f"postgres://app:{PASSWORD}@db.internal.example:5432/orders"
    masked, applied = Masker(masking.profile(), Vault(), b"k" * 32).apply(text, scan(text))
    # the credentials start before the e-mail recognizer's reading of password@host, and so win the overlap
    assert masked == "postgres://<SECRET_1>@db.internal.example:5432/orders"
    assert [a.entity for a in applied] == ["SECRET"]


@pytest.mark.parametrize("text", BENIGN, ids=[t[:40] for t in BENIGN])
def test_similar_looking_benign_strings_are_not_masked(scan, text: str) -> None:
    assert [(e, text[s:t]) for e, s, t, score in scan(text) if score >= 0.5] == []


def test_the_benign_corpus_has_no_secret(scan) -> None:
    found = [(p.text, e) for p in benign_prompts() for e, *_ in scan(p.text) if e in SECRET_ENTITIES]
    assert found == []


@pytest.mark.parametrize("value", ["<PASSWORD>", "${DB_PASSWORD}", "$DB_PASSWORD", "%(password)s", "********",
                                   "your-password-here", "changeme", "getpass()", "os.environ['PW']", "self.password",
                                   "db_password", "null"])
def test_placeholders_and_code_are_no_password(value: str) -> None:
    assert SecretRecognizer().analyze(f"password: {value}", ["SECRET"]) == []


def test_a_key_needs_a_random_looking_value() -> None:
    recognizer = SecretRecognizer()
    for value in ("configuration_value", "aaaa1111aaaa1111", "short1", "Token"):
        assert recognizer.analyze(f"api_key: {value}", ["SECRET"]) == [], value
    assert entropy("aaaa1111aaaa1111") < 2.5 <= entropy(draw("0123456789abcdef", 16))
    assert recognizer.analyze("api_key: getApiKeyFromVaultForUser", ["SECRET"]) == []  # camel-case words
