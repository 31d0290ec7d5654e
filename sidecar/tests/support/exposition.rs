//! A strict reader of the OpenMetrics text exposition (the subset a Prometheus server reads
//! from `/metrics`), written for the tests so they check the format itself rather than trust
//! the encoder: metadata lines, metric and label names, label escaping, values, which sample
//! names a family of each type may carry, histogram bucket order and totals, and `# EOF`.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Clone, Debug, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
}

impl Exposition {
    /// The value of the sample `name` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.families.values().flat_map(|f| &f.samples).find(|s| s.name == name && s.labels == want).map(|s| s.value)
    }

    /// Like [`value`](Self::value), panicking with the family's samples when absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("bad value `{s}`")),
    }
}

/// `{a="x",b="y"}` → map, and the rest of the line after `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with {")?;
    if let Some(r) = rest.strip_prefix('}') {
        return Ok((labels, r));
    }
    loop {
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name `{name}`"));
        }
        rest = rest[eq + 1..].strip_prefix('"').ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in label value".into()),
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("duplicate label `{name}`"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        rest = rest.strip_prefix(',').ok_or("labels must be separated by ,")?;
    }
}

/// The sample-name suffixes a family of `kind` may use.
fn suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "gauge" | "unknown" | "stateset" => &[""],
        "histogram" => &["_bucket", "_count", "_sum", "_created"],
        "gaugehistogram" => &["_bucket", "_gcount", "_gsum"],
        "summary" => &["", "_count", "_sum", "_created"],
        "info" => &["_info"],
        _ => &[],
    }
}

/// Parses and checks a whole exposition.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let body = text.strip_suffix("# EOF\n").ok_or("does not end with `# EOF`")?;
    if !(body.is_empty() || body.ends_with('\n')) {
        return Err("`# EOF` does not start a line".into());
    }
    let mut out = Exposition::default();
    let mut current: Option<String> = None;
    for (n, line) in body.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (what, name) = (parts.next().unwrap_or(""), parts.next().ok_or_else(|| at("no metric name".into()))?);
            let rest = parts.next();
            if !is_metric_name(name) {
                return Err(at(format!("bad metric name `{name}`")));
            }
            if current.as_deref() != Some(name) {
                if out.families.contains_key(name) {
                    return Err(at(format!("family `{name}` is not contiguous")));
                }
                out.families.insert(name.to_owned(), Family::default());
                current = Some(name.to_owned());
            }
            let fam = out.families.get_mut(name).unwrap();
            if !fam.samples.is_empty() {
                return Err(at("metadata after samples".into()));
            }
            match (what, rest) {
                ("HELP", Some(h)) if fam.help.is_none() => fam.help = Some(h.to_owned()),
                ("TYPE", Some(t)) if fam.kind.is_empty() => {
                    if suffixes(t).is_empty() {
                        return Err(at(format!("unknown type `{t}`")));
                    }
                    fam.kind = t.to_owned();
                }
                ("UNIT", Some(u)) if fam.unit.is_none() => {
                    if !name.ends_with(&format!("_{u}")) {
                        return Err(at(format!("family name does not end with its unit `{u}`")));
                    }
                    fam.unit = Some(u.to_owned());
                }
                _ => return Err(at("bad or repeated metadata".into())),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(at("comment that is not HELP/TYPE/UNIT/EOF".into()));
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name `{name}`")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') { parse_labels(&line[name_end..]).map_err(at)? } else { (BTreeMap::new(), &line[name_end..]) };
        let rest = rest.strip_prefix(' ').ok_or_else(|| at("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<f64>().map_err(|_| at(format!("bad timestamp `{ts}`")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = current.as_deref().ok_or_else(|| at("sample before any TYPE".into()))?;
        let fam = out.families.get_mut(family).unwrap();
        if fam.kind.is_empty() {
            return Err(at("sample before its family's TYPE".into()));
        }
        let suffix = name.strip_prefix(family).ok_or_else(|| at(format!("sample of another family than `{family}`")))?;
        if !suffixes(&fam.kind).contains(&suffix) {
            return Err(at(format!("`{suffix}` is not a sample of a {}", fam.kind)));
        }
        if fam.kind == "counter" && suffix == "_total" && (value.is_nan() || value < 0.0) {
            return Err(at("negative counter".into()));
        }
        if suffix == "_bucket" && !labels.contains_key("le") {
            return Err(at("bucket without le".into()));
        }
        fam.samples.push(Sample { name: name.to_owned(), labels, value });
    }
    for (name, fam) in &out.families {
        if fam.kind.is_empty() {
            return Err(format!("family `{name}` has no TYPE"));
        }
        if fam.kind == "histogram" {
            check_histogram(name, fam)?;
        }
    }
    Ok(out)
}

/// One histogram series: buckets (le, cumulative count), `_count`, `_sum`.
type Series = (Vec<(f64, f64)>, Option<f64>, Option<f64>);

/// Per label set: buckets by increasing `le`, cumulative counts, `+Inf` last and equal to
/// `_count`, and a `_sum`.
fn check_histogram(name: &str, fam: &Family) -> Result<(), String> {
    let mut series: BTreeMap<Vec<(String, String)>, Series> = BTreeMap::new();
    for s in &fam.samples {
        let key: Vec<_> = s.labels.iter().filter(|(k, _)| *k != "le").map(|(k, v)| (k.clone(), v.clone())).collect();
        let entry = series.entry(key).or_default();
        match &s.name[name.len()..] {
            "_bucket" => entry.0.push((parse_value(&s.labels["le"])?, s.value)),
            "_count" => entry.1 = Some(s.value),
            "_sum" => entry.2 = Some(s.value),
            _ => {}
        }
    }
    for (key, (buckets, count, sum)) in series {
        let what = format!("{name}{key:?}");
        if sum.is_none() {
            return Err(format!("{what}: no _sum"));
        }
        if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
            return Err(format!("{what}: last bucket is not +Inf"));
        }
        if buckets.windows(2).any(|w| w[0].0 >= w[1].0 || w[0].1 > w[1].1) {
            return Err(format!("{what}: buckets not increasing and cumulative: {buckets:?}"));
        }
        if count != Some(buckets.last().unwrap().1) {
            return Err(format!("{what}: _count {count:?} != +Inf bucket"));
        }
    }
    Ok(())
}
