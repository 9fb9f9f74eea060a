"""Checks the PromQL of the Grafana dashboard and the Prometheus rules against a
real /metrics exposition. Used by t_dashboards.sh:

  promql_check.py exprs DASHBOARD.json RULES.yml      one "SOURCE<TAB>EXPR" line per
                                                      query, Grafana variables replaced
  promql_check.py names EXPOSITION.txt EXPRS.tsv      every metric and label=value the
                                                      queries use exists in the exposition
  promql_check.py dashboard DASHBOARD.json            structure: ids, targets, layout

Each check prints one line per problem and exits 1 if there was any.
"""
import json
import re
import sys

# Series Prometheus makes itself for every target; not in any /metrics.
SYNTHETIC = {"up"}
# Labels Prometheus attaches to every scraped series (the scrape config's).
TARGET_LABELS = {"instance", "job"}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "bool", "inf", "nan"}
GRAFANA_VARS = [("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h"),
                ("${instance}", ".*"), ("$instance", ".*")]

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SELECTOR = re.compile(r"(" + NAME + r")?\s*\{([^}]*)\}")
MATCHER = re.compile(r"\s*(" + NAME + r")\s*(=~|!~|!=|=)\s*\"((?:[^\"\\]|\\.)*)\"\s*,?")


def grafana_to_promql(expr):
    for var, value in GRAFANA_VARS:
        expr = expr.replace(var, value)
    return expr


def load_exprs(dashboard_path, rules_path):
    out = []
    with open(dashboard_path) as f:
        dash = json.load(f)
    for p in all_panels(dash):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append(("panel %d %r" % (p["id"], p["title"]), grafana_to_promql(t["expr"])))
    import yaml  # only this command needs it
    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    for g in rules["groups"]:
        for r in g["rules"]:
            out.append(("rule %s" % (r.get("alert") or r.get("record")), r["expr"].strip()))
    return out


def all_panels(dash):
    for p in dash.get("panels", []):
        yield p
        for q in p.get("panels", []):  # panels inside a collapsed row
            yield q


def used(expr):
    """(metric, [(label, op, value)]) for every selector in expr, and bare metric names."""
    found = []
    rest = expr
    for m in SELECTOR.finditer(expr):
        matchers = []
        body = m.group(2)
        pos = 0
        while pos < len(body.strip()):
            mm = MATCHER.match(body, pos)
            if not mm:
                raise ValueError("cannot parse matchers {%s} in %s" % (body, expr))
            matchers.append((mm.group(1), mm.group(2), mm.group(3)))
            pos = mm.end()
        found.append((m.group(1), matchers))
    # What is left after removing selectors, strings, ranges and grouping
    # clauses: identifiers that are not functions or keywords are metric names.
    rest = SELECTOR.sub(" ", rest)
    rest = re.sub(r"\"(?:[^\"\\]|\\.)*\"", " ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    rest = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", rest)
    for m in re.finditer(r"(?<![\w.])(" + NAME + r")(\s*\()?", rest):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        found.append((word, []))
    return found


def parse_exposition(path):
    """metric name -> list of label dicts; and the declared TYPE of each family."""
    series, types = {}, {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                types[name] = kind
                continue
            if not line or line.startswith("#"):
                continue
            m = re.match(r"(" + NAME + r")(\{(.*)\})?\s+\S+", line)
            if not m:
                continue
            labels = dict(re.findall(r"(" + NAME + r")=\"((?:[^\"\\]|\\.)*)\"", m.group(3) or ""))
            series.setdefault(m.group(1), []).append(labels)
    return series, types


def check_names(exposition, exprs_tsv):
    series, types = parse_exposition(exposition)
    problems = []
    checked = 0
    with open(exprs_tsv) as f:
        for line in f:
            source, expr = line.rstrip("\n").split("\t", 1)
            for name, matchers in used(expr):
                if name is None:
                    problems.append("%s: a selector without a metric name: %s" % (source, expr))
                    continue
                if name in SYNTHETIC:
                    continue
                checked += 1
                if name not in series:
                    problems.append("%s: %s is not in /metrics" % (source, name))
                    continue
                for label, op, value in matchers:
                    if label in TARGET_LABELS:
                        continue
                    have = [s[label] for s in series[name] if label in s]
                    if not have:
                        problems.append("%s: %s has no label %s" % (source, name, label))
                    elif op == "=" and value not in have:
                        problems.append("%s: %s{%s=%r}: no such series (values: %s)"
                                        % (source, name, label, value, ", ".join(sorted(set(have)))))
                    elif op in ("=~", "!~"):
                        rx = re.compile("^(?:%s)$" % value)
                        for alt in value.split("|"):
                            if re.fullmatch(r"[\w.]+", alt) and alt not in have:
                                problems.append("%s: %s{%s=~...}: %r is not a value of %s"
                                                % (source, name, label, alt, label))
                        if op == "=~" and not any(rx.match(v) for v in have):
                            problems.append("%s: %s{%s=~%r} matches no series" % (source, name, label, value))
                    elif op == "!=" and value not in have:
                        problems.append("%s: %s{%s!=%r}: %r is not a value of %s"
                                        % (source, name, label, value, value, label))
    for p in problems:
        print(p)
    print("checked %d metric uses" % checked, file=sys.stderr)
    return 1 if problems else 0


def check_dashboard(path):
    with open(path) as f:
        dash = json.load(f)
    problems = []
    ids = [p["id"] for p in all_panels(dash)]
    if len(ids) != len(set(ids)):
        problems.append("panel ids are not unique: %s" % ids)
    names = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    if "datasource" not in names:
        problems.append("no datasource variable: the dashboard would be tied to one Prometheus")
    cells = {}
    for p in all_panels(dash):
        g = p.get("gridPos", {})
        if not all(k in g for k in "hwxy") or g["x"] + g["w"] > 24:
            problems.append("panel %d: gridPos %s is not within 24 columns" % (p["id"], g))
            continue
        hit = set()
        for dx in range(g["w"]):
            for dy in range(g["h"]):
                c = (g["x"] + dx, g["y"] + dy)
                if c in cells:
                    hit.add(cells[c])
                cells[c] = p["id"]
        for other in sorted(hit):
            problems.append("panels %d and %d overlap" % (other, p["id"]))
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append("panel %d %r: datasource is not ${datasource}" % (p["id"], p["title"]))
        targets = [t for t in p.get("targets", []) if t.get("expr")]
        if not targets:
            problems.append("panel %d %r: no query" % (p["id"], p["title"]))
        refs = [t.get("refId") for t in p.get("targets", [])]
        if len(refs) != len(set(refs)):
            problems.append("panel %d %r: refIds are not unique" % (p["id"], p["title"]))
    for p in problems:
        print(p)
    return 1 if problems else 0


def main():
    cmd = sys.argv[1]
    if cmd == "exprs":
        for source, expr in load_exprs(sys.argv[2], sys.argv[3]):
            print("%s\t%s" % (source, " ".join(expr.split())))
        return 0
    if cmd == "names":
        return check_names(sys.argv[2], sys.argv[3])
    if cmd == "dashboard":
        return check_dashboard(sys.argv[2])
    print("unknown command " + cmd, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
