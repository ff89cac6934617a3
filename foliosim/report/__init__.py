"""The comparison report of a policy suite: report.md, report.html with PNG figures, and
summary.json (issue 4's format)."""

from foliosim.report.aggregate import metric_table, policy_totals, summary, verdicts
from foliosim.report.render import write_report

__all__ = ["metric_table", "policy_totals", "summary", "verdicts", "write_report"]
