#!/usr/bin/env python3
"""Checks deploy/grafana/herd-dashboard.json.

    python3 deploy/grafana/check.py [DASHBOARD] [--metrics SCRAPE]

- the file is JSON, with schemaVersion, unique panel ids, and every panel and query on the
  ${DS_PROMETHEUS} data source;
- the variables DS_PROMETHEUS (a Prometheus data source) and app
  (label_values(herd_app_instances_desired, app)) exist;
- every PromQL expression (panels and variables) uses only the metric names below, and only
  their labels in matchers and in by/without/on/ignoring clauses.

With the `promql-parser` package installed (pip install promql-parser) the expressions are
parsed for real; without it a simpler token check runs. --metrics FILE (a saved
`curl -H "Authorization: Bearer $T" localhost:9090/metrics`) also lists which dashboard metrics
that herd exports and which it does not (yet). Exit 0 when all checks pass, 1 otherwise.
"""

import json
import re
import sys

# What herd exports today (crates/herd-admin/src/metrics.rs), with the labels each carries.
TODAY = {
    "herd_app_instances_desired": {"app"},
    "herd_app_instances_current": {"app"},
    "herd_app_instances_ready": {"app"},
    "herd_scaling_decisions_total": {"app", "reason"},
    "herd_scaling_paused": {"app"},
    "herd_instance_state": {"app", "instance", "state"},
    "herd_instance_restarts_total": {"app", "instance"},
    "herd_instance_resident_memory_bytes": {"app", "instance"},
    "herd_instance_cpu_usage_cores": {"app", "instance"},
    "herd_instance_in_flight_requests": {"app", "instance"},
    "herd_instance_requests_total": {"app", "instance"},
}
# Request metrics herd adds next.
NEXT = {
    "herd_http_requests_total": {"app", "route", "status_class"},
    "herd_http_request_duration_seconds_bucket": {"app", "route", "le"},
    "herd_upstream_connect_errors_total": {"app"},
    "herd_http_retries_total": {"app"},
}
METRICS = {**TODAY, **NEXT}
DS_UID = "${DS_PROMETHEUS}"

# Grafana variables, replaced by something PromQL accepts before parsing.
GRAFANA_VARS = [
    (re.compile(r"\$__(rate_interval|interval|range)\b"), "5m"),
    (re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}"), "x"),
    (re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*"), "x"),
]

# For the fallback check: words allowed outside label matchers besides metric names.
PROMQL_WORDS = {
    # functions
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "count_over_time", "day_of_week", "delta", "deriv", "exp",
    "floor", "histogram_quantile", "holt_winters", "idelta", "increase", "irate",
    "label_join", "label_replace", "last_over_time", "ln", "log2", "log10",
    "max_over_time", "min_over_time", "predict_linear", "quantile_over_time", "rate",
    "resets", "round", "scalar", "sort", "sort_desc", "sqrt", "stddev_over_time",
    "sum_over_time", "time", "timestamp", "vector",
    # aggregations and keywords
    "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "and", "or", "unless", "offset",
}


class Problems(list):
    def add(self, where, msg):
        self.append(f"{where}: {msg}")


def panels_of(items):
    for p in items:
        yield p
        yield from panels_of(p.get("panels", []))


def substitute(expr):
    for pattern, repl in GRAFANA_VARS:
        expr = pattern.sub(repl, expr)
    return expr


def check_expr_parsed(where, expr, problems, used):
    import promql_parser as pp

    try:
        ast = pp.parse(substitute(expr))
    except Exception as e:  # the parser raises its own error types
        problems.add(where, f"PromQL does not parse: {e}: {expr}")
        return
    selectors, groupings = [], []

    def visit(node):
        if isinstance(node, pp.VectorSelector):
            selectors.append(node)
        elif isinstance(node, pp.AggregateExpr) and node.modifier is not None:
            groupings.append(list(node.modifier.labels))
        elif isinstance(node, pp.BinaryExpr) and node.modifier is not None:
            matching = getattr(node.modifier, "matching", None)
            if matching is not None:
                groupings.append(list(matching.labels))
        return True

    pp.walk(ast, visit)
    labels_here = set()
    for sel in selectors:
        name = sel.name
        if name is None:
            problems.add(where, f"selector without a metric name: {expr}")
            continue
        if name not in METRICS:
            problems.add(where, f"unknown metric {name!r}: {expr}")
            continue
        used.add(name)
        labels_here |= METRICS[name]
        for m in sel.matchers.matchers:
            if m.name != "__name__" and m.name not in METRICS[name]:
                problems.add(where, f"{name} has no label {m.name!r}: {expr}")
    for labels in groupings:
        for label in labels:
            if label not in labels_here:
                problems.add(where, f"grouping by {label!r}, which no metric here has: {expr}")


def check_expr_tokens(where, expr, problems, used):
    text = re.sub(r'"(\\.|[^"\\])*"', '""', substitute(expr))
    for sel in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}", text):
        name = sel.group(1)
        for label in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", sel.group(2)):
            if name in METRICS and label not in METRICS[name]:
                problems.add(where, f"{name} has no label {label!r}: {expr}")
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    if text.count("(") != text.count(")"):
        problems.add(where, f"unbalanced parentheses: {expr}")
    groupings = re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    labels_here = set()
    for word in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if word in METRICS:
            used.add(word)
            labels_here |= METRICS[word]
        elif word not in PROMQL_WORDS and word != "x":
            problems.add(where, f"unknown metric or function {word!r}: {expr}")
    for group in groupings:
        for label in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", group):
            if label not in labels_here:
                problems.add(where, f"grouping by {label!r}, which no metric here has: {expr}")


def check(dashboard, problems):
    used = set()
    try:
        import promql_parser  # noqa: F401

        check_expr = check_expr_parsed
        mode = "parsed with promql-parser"
    except ImportError:
        check_expr = check_expr_tokens
        mode = "token check (pip install promql-parser for a full parse)"

    if not isinstance(dashboard.get("schemaVersion"), int):
        problems.add("dashboard", "no schemaVersion")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("DS_PROMETHEUS")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.add("templating", "needs a DS_PROMETHEUS variable of type datasource, query prometheus")
    app = variables.get("app")
    app_query = "label_values(herd_app_instances_desired, app)"
    if not app or app.get("definition") != app_query:
        problems.add("templating", f"needs an app variable defined as {app_query}")
    for name, v in variables.items():
        if v.get("type") == "query":
            if (v.get("datasource") or {}).get("uid") != DS_UID:
                problems.add(f"variable {name}", f"data source is not {DS_UID}")
            q = v.get("definition") or ""
            m = re.fullmatch(r"label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\)", q)
            check_expr(f"variable {name}", m.group(1) if m else q, problems, used)

    ids = set()
    n_exprs = 0
    for p in panels_of(dashboard.get("panels", [])):
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            problems.add(where, "duplicate panel id")
        ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != DS_UID:
            problems.add(where, f"panel data source is not {DS_UID}")
        targets = p.get("targets") or []
        if not targets:
            problems.add(where, "no queries")
        for t in targets:
            if (t.get("datasource") or {}).get("uid") != DS_UID:
                problems.add(where, f"query {t.get('refId')} data source is not {DS_UID}")
            expr = t.get("expr")
            if not expr:
                problems.add(where, f"query {t.get('refId')} has no expr")
                continue
            n_exprs += 1
            check_expr(where, expr, problems, used)
    return used, n_exprs, mode


def scraped_names(path):
    names = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)[{ ]", line)
            if m and not line.startswith("#"):
                names.add(m.group(1))
    return names


def main(argv):
    path = "deploy/grafana/herd-dashboard.json"
    scrape = None
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--metrics" and args:
            scrape = args.pop(0)
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            path = a
    problems = Problems()
    try:
        with open(path, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        print(f"{path}: {e}")
        return 1
    used, n_exprs, mode = check(dashboard, problems)
    unused = sorted(set(METRICS) - used)
    if unused:
        problems.add("dashboard", f"no panel shows {', '.join(unused)}")
    for p in problems:
        print(p)
    print(f"{path}: {n_exprs} panel queries, {len(used)} metrics, {mode}: "
          f"{'ok' if not problems else f'{len(problems)} problem(s)'}")
    if scrape:
        have = scraped_names(scrape)
        herd = {n for n in have if n.startswith("herd_")}
        print(f"{scrape}: exports {len(used & have)} of the {len(used)} dashboard metrics; "
              f"missing: {', '.join(sorted(used - have)) or 'none'}")
        extra = sorted(n for n in herd - set(METRICS)
                       if not re.search(r"_(sum|count|created)$", n))
        if extra:
            print(f"{scrape}: herd series no panel uses: {', '.join(extra)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
