//! Prometheus text as the tests read it: each sample's name, labels and value, and the names of
//! the families a scrape declares.

use std::collections::{BTreeMap, BTreeSet};

pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One `/metrics` answer.
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// The names of `# TYPE` lines: every family, with or without samples.
    pub families: BTreeSet<String>,
}

impl Scrape {
    /// Reads the text exposition format as the prometheus crate writes it (label values
    /// without escaped quotes, which ours never hold).
    pub fn parse(text: &str) -> anyhow::Result<Scrape> {
        let mut samples = Vec::new();
        let mut families = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(name) = rest.split_whitespace().next() {
                    families.insert(name.to_owned());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| anyhow::anyhow!("not a sample: {line}"))?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse()?,
            });
        }
        Ok(Scrape { samples, families })
    }

    /// The sum of the samples of `name` whose labels include every pair of `with`.
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                with.iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Whether any sample of `name` has the label pairs of `with`.
    pub fn has(&self, name: &str, with: &[(&str, &str)]) -> bool {
        self.samples.iter().any(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v))
        })
    }
}

/// The series docs/metrics.md lists, by name, with the component (`gateway` or `node`) whose
/// table lists each.
pub fn catalog() -> anyhow::Result<Vec<(String, &'static str)>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    let text = std::fs::read_to_string(&path)?;
    let mut names = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("| `shardgate_") else {
            continue;
        };
        let Some((name, _)) = rest.split_once('`') else {
            continue;
        };
        let component = if name.starts_with("gateway_") {
            "gateway"
        } else {
            "node"
        };
        names.push((format!("shardgate_{name}"), component));
    }
    anyhow::ensure!(!names.is_empty(), "no series in {}", path.display());
    Ok(names)
}

/// `GET url` as a [`Scrape`].
pub async fn scrape(http: &reqwest::Client, url: &str) -> anyhow::Result<Scrape> {
    let text = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Scrape::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_and_families_are_read() {
        let text = "# HELP a_total x\n# TYPE a_total counter\na_total{era=\"session\",class=\"tools/call\"} 3\na_total{era=\"none\",class=\"none\"} 1\n# TYPE b gauge\nb 2.5\n# TYPE c counter\n";
        let s = Scrape::parse(text).expect("parsed");
        assert_eq!(s.sum("a_total", &[]), 4.0);
        assert_eq!(s.sum("a_total", &[("class", "tools/call")]), 3.0);
        assert_eq!(s.sum("b", &[]), 2.5);
        assert!(s.families.contains("c"));
        assert!(!s.has("c", &[]));
    }
}
