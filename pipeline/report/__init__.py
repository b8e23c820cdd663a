"""Reports out: report.json written atomically, report.md, the self-contained report.html, and
`rerun` (a conversion repeated from its report). Renders dicts; a run assembles them (pipeline.run).
May import core (and targets, edgecore); never frontend, quantize, train or run."""
