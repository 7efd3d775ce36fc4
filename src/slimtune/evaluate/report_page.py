"""The self-contained HTML page of a report: its stylesheet and template (filled by ``Report.html``)."""

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #111827; }
table { border-collapse: collapse; margin-bottom: 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #d1d5db; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f3f4f6; }
td:first-child, th:first-child { text-align: left; }
tr.ratio td { color: #4b5563; font-size: 0.8rem; border-top: none; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
figure.plot { margin: 0; border: 1px solid #e5e7eb; }
details { margin-bottom: 0.5rem; }
table.precision td { text-align: left; }
p.warning { background: #fef2f2; border: 2px solid #dc2626; color: #991b1b; padding: 0.5rem 0.8rem; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"/>
<title>slimtune report</title>
<style>{css}</style>
</head>
<body>
<h1>slimtune report</h1>
{warnings}
<table class="stages">
<thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody>
</table>
<h2>Trade-offs</h2>
<div class="plots">
{plots}
</div>
<h2>Details</h2>
<table class="details">
<thead><tr><th>Stage</th><th>Artifact</th><th>Throughput</th><th>Peak memory</th><th>Extra</th></tr></thead>
<tbody>
{details}
</tbody>
</table>
<h2>Precision per layer</h2>
{precision}
<h2>Quantization settings</h2>
{int8}
<h2>Structured pruning</h2>
{pruning}
<h2>Sparsity per layer</h2>
{sparsity}
<h2>Environment</h2>
<table class="env">
<tbody>
{env}
</tbody>
</table>
</body>
</html>
"""

__all__ = ["CSS", "PAGE"]
