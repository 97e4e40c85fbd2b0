"""The notes' claims, parsed from experiments/CLAIMS.md (the suite's copy of ../shared/CLAIMS.md).

The file has one section per seed file, `## <seed file> — <title>`, and in it one bullet per claim,
`- **C003-1** <statement>`, continued on lines indented by two spaces. Other bullets (context) end
a claim and are not claims.
"""
import re
from dataclasses import dataclass
from pathlib import Path

from backprop_suite.errors import SpecError
from backprop_suite.experiment import EXPERIMENTS_DIR

CLAIMS_FILE = EXPERIMENTS_DIR / "CLAIMS.md"
_SECTION = re.compile(r"^## (?P<seed>\S+\.txt)\b")
_CLAIM = re.compile(r"^- \*\*(?P<id>C\d{3}-\d+)\*\* (?P<text>.*)$")
SUMMARY_LENGTH = 200


@dataclass(frozen=True)
class Claim:
    id: str  # "C003-1"
    seed_file: str  # "003_234275e80551f8d1.txt"
    statement: str  # the whole bullet, on one line

    @property
    def summary(self) -> str:
        """The statement's first sentence, at most SUMMARY_LENGTH characters."""
        first = re.split(r"(?<=\.)\s+(?=[A-Z])", self.statement, maxsplit=1)[0]
        return first if len(first) <= SUMMARY_LENGTH else first[:SUMMARY_LENGTH - 1].rstrip() + "…"


def load_claims(path: Path = CLAIMS_FILE) -> list[Claim]:
    """Every claim in file order; SpecError naming the file and line if the file is not as described above."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: cannot read the claims file: {error}") from None
    claims, seed, current = [], None, None
    for number, line in enumerate(lines, 1):
        if current is not None and line.startswith("  ") and line.strip():
            current[2].append(line.strip())
            continue
        if current is not None:
            claims.append(Claim(current[0], current[1], " ".join(current[2])))
            current = None
        if section := _SECTION.match(line):
            seed = section["seed"]
        elif claim := _CLAIM.match(line):
            if seed is None:
                raise SpecError(f"{path}:{number}: claim {claim['id']} comes before any '## <seed file>' heading")
            current = (claim["id"], seed, [claim["text"].strip()])
    if current is not None:
        claims.append(Claim(current[0], current[1], " ".join(current[2])))
    if not claims:
        raise SpecError(f"{path}: no claims found (expected bullets like '- **C000-1** ...')")
    ids = [claim.id for claim in claims]
    if duplicated := sorted({i for i in ids if ids.count(i) > 1}):
        raise SpecError(f"{path}: claim ID(s) {', '.join(duplicated)} appear more than once")
    return claims
