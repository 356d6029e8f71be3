//! The subset of Go's text/template that `--format` takes in Docker's CLI,
//! evaluated against a JSON value: `{{.A.B}}`, `{{.}}`, `{{json X}}`,
//! `{{index X "key" 0}}`, `{{range X}}…{{end}}` (over a list's items or a
//! map's values, in key order as Go does), `{{if X}}…{{else}}…{{end}}`,
//! `$` for the whole value, and `{{-`/`-}}` trimming the space beside them.
//! A template that does not parse is printed as it is, as before.

use serde_json::Value;

enum Node {
    Text(String),
    Expr(String),
    Range(String, Vec<Node>),
    If(String, Vec<Node>, Vec<Node>),
}

/// Expands `t` against `root`.
pub fn render(t: &str, root: &Value) -> String {
    let t = t.replace("\\t", "\t").replace("\\n", "\n");
    match parse(&t) {
        Some(nodes) => {
            let mut out = String::new();
            walk(&nodes, root, root, &mut out);
            out
        }
        None => t,
    }
}

/// Text and `{{…}}` actions, with `{{-` / `-}}` trimming applied.
fn tokens(t: &str) -> Option<Vec<(bool, String)>> {
    let mut out: Vec<(bool, String)> = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        let mut text = rest[..i].to_string();
        let j = rest[i..].find("}}")? + i;
        let mut action = &rest[i + 2..j];
        if let Some(a) = action.strip_prefix('-') {
            text = text.trim_end().to_string();
            action = a;
        }
        let trim_after = action.ends_with('-');
        if trim_after {
            action = &action[..action.len() - 1];
        }
        out.push((false, text));
        out.push((true, action.trim().to_string()));
        rest = &rest[j + 2..];
        if trim_after {
            rest = rest.trim_start();
        }
    }
    out.push((false, rest.to_string()));
    Some(out)
}

fn parse(t: &str) -> Option<Vec<Node>> {
    let toks = tokens(t)?;
    let mut it = toks.into_iter();
    let (nodes, end) = block(&mut it)?;
    // Only the whole template may end without an `{{end}}`.
    end.is_none().then_some(nodes)
}

/// Nodes up to the `end` or `else` that closes them (returned), or the end
/// of input (None).
fn block(it: &mut impl Iterator<Item = (bool, String)>) -> Option<(Vec<Node>, Option<String>)> {
    let mut nodes = Vec::new();
    while let Some((action, s)) = it.next() {
        if !action {
            if !s.is_empty() {
                nodes.push(Node::Text(s));
            }
            continue;
        }
        if s == "end" || s == "else" {
            return Some((nodes, Some(s)));
        }
        if let Some(x) = s.strip_prefix("range ") {
            let (body, end) = block(it)?;
            (end.as_deref() == Some("end")).then_some(())?;
            nodes.push(Node::Range(x.trim().to_string(), body));
        } else if let Some(x) = s.strip_prefix("if ") {
            let (yes, end) = block(it)?;
            let no = match end.as_deref() {
                Some("end") => Vec::new(),
                Some("else") => {
                    let (no, end) = block(it)?;
                    (end.as_deref() == Some("end")).then_some(())?;
                    no
                }
                _ => return None,
            };
            nodes.push(Node::If(x.trim().to_string(), yes, no));
        } else {
            nodes.push(Node::Expr(s));
        }
    }
    Some((nodes, None))
}

fn walk(nodes: &[Node], dot: &Value, root: &Value, out: &mut String) {
    for n in nodes {
        match n {
            Node::Text(s) => out.push_str(s),
            Node::Expr(e) => {
                let (json, v) = eval(e, dot, root);
                match (json, &v) {
                    (true, v) => out.push_str(&v.to_string()),
                    (false, Value::String(s)) => out.push_str(s),
                    (false, Value::Null) => out.push_str("<no value>"),
                    (false, v) => out.push_str(&v.to_string()),
                }
            }
            Node::Range(e, body) => match eval(e, dot, root).1 {
                Value::Array(items) => items.iter().for_each(|i| walk(body, i, root, out)),
                // serde_json's map keeps its keys sorted: Go's order.
                Value::Object(m) => m.values().for_each(|v| walk(body, v, root, out)),
                _ => {}
            },
            Node::If(e, yes, no) => {
                let branch = if truthy(&eval(e, dot, root).1) {
                    yes
                } else {
                    no
                };
                walk(branch, dot, root, out);
            }
        }
    }
}

/// Go's truth: not false, 0, "", null or an empty list or map.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// An expression's value, and whether `json` asked for it as JSON.
fn eval(e: &str, dot: &Value, root: &Value) -> (bool, Value) {
    let (json, e) = match e.strip_prefix("json ") {
        Some(x) => (true, x.trim()),
        None => (e == "json", if e == "json" { "." } else { e }),
    };
    let e = e
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .unwrap_or(e)
        .trim();
    // `index .Path "key" 0 …`: map keys (quoted) and list positions.
    let (path, keys) = match e.strip_prefix("index ") {
        Some(args) => {
            let args = args.trim();
            let (p, k) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
            (p, index_keys(k))
        }
        None => (e, Vec::new()),
    };
    let (mut v, path) = match path.strip_prefix('$') {
        Some(p) => (root, p),
        None => (dot, path),
    };
    for part in path
        .trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
    {
        v = v.get(part).unwrap_or(&Value::Null);
    }
    for k in &keys {
        v = match (k.parse::<usize>(), v) {
            (Ok(n), Value::Array(a)) => a.get(n),
            _ => v.get(k.as_str()),
        }
        .unwrap_or(&Value::Null);
    }
    (json, v.clone())
}

/// The arguments after `index`'s path: `"quoted"` keys and bare numbers.
fn index_keys(s: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            keys.push(q[..end].to_string());
            rest = q.get(end + 1..).unwrap_or("").trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            keys.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_json_and_index() {
        let r = json!({"ID": "abc", "Tag": "latest", "N": 3});
        assert_eq!(render("{{.ID}}\\t{{.Tag}}", &r), "abc\tlatest");
        assert_eq!(render("{{json .N}} {{.Missing}}", &r), "3 <no value>");
        assert_eq!(render("{{json .}}", &json!({"a": 1})), r#"{"a":1}"#);
        let r = json!({"Options": {"a.b": "1"}, "P": {"80/tcp": [{"HostPort": "8080"}]}});
        assert_eq!(render("{{index .Options \"a.b\"}}", &r), "1");
        assert_eq!(
            render("{{json (index .P \"80/tcp\" 0)}}", &r),
            r#"{"HostPort":"8080"}"#
        );
        assert_eq!(render("{{index .Options \"x\"}}", &r), "<no value>");
    }

    #[test]
    fn range_if_and_trimming() {
        // Docker's best-known idiom: every network's address.
        let c = json!({"Name": "web", "NetworkSettings": {"Networks": {
            "b": {"IPAddress": "10.0.1.2"}, "a": {"IPAddress": "10.0.0.2"}}}});
        assert_eq!(
            render(
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                &c
            ),
            "10.0.0.2 10.0.1.2 "
        );
        // $ is the whole value inside a range.
        assert_eq!(
            render("{{range .NetworkSettings.Networks}}{{$.Name}}{{end}}", &c),
            "webweb"
        );
        let n = json!({"IPAM": {"Config": [{"Subnet": "10.1.0.0/24"}]}});
        assert_eq!(
            render("{{range .IPAM.Config}}{{.Subnet}}{{end}}", &n),
            "10.1.0.0/24"
        );
        let s = json!({"Running": true, "Paused": false, "Ports": []});
        assert_eq!(render("{{if .Running}}up{{else}}down{{end}}", &s), "up");
        assert_eq!(render("{{if .Paused}}p{{end}}", &s), "");
        assert_eq!(render("{{if .Ports}}x{{else}}none{{end}}", &s), "none");
        assert_eq!(render("a  {{- .Running -}}  b", &s), "atrueb");
        // Unbalanced: printed as given.
        assert_eq!(render("{{range .X}}", &s), "{{range .X}}");
        assert_eq!(render("{{end}}", &s), "{{end}}");
    }
}
