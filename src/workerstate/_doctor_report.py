"""The doctor's report: findings grouped in sections, printed with numbered advice."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DoctorReport", "Finding", "Section", "ms"]


@dataclass
class Finding:
    """One line of the report: ``status`` is OK, PROBLEM, NOTE or INFO."""

    status: str
    text: str
    details: list[str] = field(default_factory=list)
    advice: str | None = None


@dataclass
class Section:
    """A titled group of findings."""

    title: str
    findings: list[Finding] = field(default_factory=list)

    def add(self, status: str, text: str, *details: str, advice: str | None = None) -> Finding:
        finding = Finding(status, text, list(details), advice)
        self.findings.append(finding)
        return finding


@dataclass
class DoctorReport:
    """The doctor's findings; ``str()`` is the printed report, ``ok`` the verdict."""

    header: str
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        section = Section(title)
        self.sections.append(section)
        return section

    @property
    def findings(self) -> list[Finding]:
        return [finding for section in self.sections for finding in section.findings]

    @property
    def problems(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.status == "PROBLEM"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        import textwrap

        advice: list[str] = []
        lines = [self.header]
        for section in self.sections:
            if not section.findings:
                continue
            lines += ["", section.title]
            for finding in section.findings:
                text = finding.text
                if finding.advice is not None:
                    if finding.advice not in advice:
                        advice.append(finding.advice)
                    text += f" [advice {advice.index(finding.advice) + 1}]"
                lines.append(
                    textwrap.fill(
                        text,
                        width=96,
                        initial_indent=f"  {finding.status:8} ",
                        subsequent_indent=" " * 11,
                        break_on_hyphens=False,
                        break_long_words=False,
                    )
                )
                lines.extend(" " * 11 + detail for detail in finding.details)
        if advice:
            lines += ["", "Advice"]
            for i, text in enumerate(advice, 1):
                lines.append(
                    textwrap.fill(
                        text,
                        width=96,
                        initial_indent=f"  {i}. ",
                        subsequent_indent="     ",
                        break_on_hyphens=False,
                        break_long_words=False,
                    )
                )
        problems = len(self.problems)
        lines += [
            "",
            "Result: no problems found."
            if not problems
            else f"Result: {problems} problem{'s' if problems > 1 else ''} found.",
        ]
        return "\n".join(lines)


def ms(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds:.2f} s"
