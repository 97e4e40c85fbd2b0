"""What a worked example returns."""
from dataclasses import dataclass, field


@dataclass
class WorkedResult:
    metrics: dict[str, float]  # named numbers the spec's [[expected]] entries check
    text: str  # what the example prints; saved as report.txt
    figures: dict = field(default_factory=dict)  # file name -> function(path) that draws it
    captions: dict = field(default_factory=dict)  # file name -> one line: what to look for in it
    data: dict | None = None  # provenance of the data used, if any
    details: dict = field(default_factory=dict)  # larger JSON-ready results
