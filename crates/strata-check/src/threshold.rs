//! `warn_if` / `error_if`: a comparison on the failing-row count, or on its share of the
//! checked table (`> 1%`).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Rows(u64),
    /// Percent of the checked table's rows.
    Percent(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub op: Op,
    pub amount: Amount,
}

impl Threshold {
    /// Parses `> 0`, `>= 10`, `> 1%`, `!= 0`, ...
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (op, rest) = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("!=", Op::Ne),
            ("<>", Op::Ne),
            (">", Op::Gt),
            ("<", Op::Lt),
            ("=", Op::Eq),
        ]
        .iter()
        .find_map(|(p, op)| s.strip_prefix(p).map(|r| (*op, r.trim())))
        .ok_or_else(|| format!("`{s}` is not a threshold such as `> 0` or `> 1%`"))?;
        let amount = if let Some(p) = rest.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("`{s}`: `{p}` is not a number"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("`{s}`: a percentage must be between 0 and 100"));
            }
            Amount::Percent(v)
        } else {
            Amount::Rows(rest.parse().map_err(|_| {
                format!("`{s}`: `{rest}` is not a row count (or a percentage such as 1%)")
            })?)
        };
        Ok(Self { op, amount })
    }

    /// Whether `failing` rows out of `total` trip the threshold.
    pub fn trips(&self, failing: u64, total: u64) -> bool {
        let (x, y) = match self.amount {
            Amount::Rows(n) => (failing as f64, n as f64),
            Amount::Percent(p) => (
                if total == 0 {
                    0.0
                } else {
                    100.0 * failing as f64 / total as f64
                },
                p,
            ),
        };
        match self.op {
            Op::Gt => x > y,
            Op::Ge => x >= y,
            Op::Lt => x < y,
            Op::Le => x <= y,
            Op::Eq => x == y,
            Op::Ne => x != y,
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ne => "!=",
        };
        match self.amount {
            Amount::Rows(n) => write!(f, "{op} {n}"),
            Amount::Percent(p) => write!(f, "{op} {p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentages() {
        let t = Threshold::parse("> 0").unwrap();
        assert!(!t.trips(0, 10) && t.trips(1, 10));
        let p = Threshold::parse(">1%").unwrap();
        assert!(!p.trips(1, 100) && p.trips(2, 100));
        assert!(!p.trips(0, 0));
        assert_eq!(Threshold::parse(">= 2.5%").unwrap().to_string(), ">= 2.5%");
        assert!(Threshold::parse("!= 0").unwrap().trips(3, 3));
    }

    #[test]
    fn malformed_thresholds_say_what_is_wrong() {
        assert!(
            Threshold::parse("lots")
                .unwrap_err()
                .contains("not a threshold")
        );
        assert!(
            Threshold::parse("> many")
                .unwrap_err()
                .contains("`many` is not a row count")
        );
        assert!(
            Threshold::parse("> 120%")
                .unwrap_err()
                .contains("between 0 and 100")
        );
        assert!(Threshold::parse("> -1").is_err());
    }
}
