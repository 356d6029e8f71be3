//! Platforms (`os/arch[/variant]`) and choosing one image from an index.

use std::fmt;

/// A platform as `--platform` names it, normalised the way containerd does
/// (`aarch64` → `arm64` with variant `v8`, `armhf` → `arm/v7`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Architecture in Go's spelling, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// Variant, e.g. `v8` (arm64's default) or `v7`.
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]` (or just `arch`, meaning Linux).
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [arch] if !arch.is_empty() => ("linux", *arch, None),
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(*v)),
            _ => {
                return Err(format!(
                    "invalid platform \"{s}\": expected os/arch[/variant]"
                ));
            }
        };
        if os.is_empty() || arch.is_empty() || variant.is_some_and(str::is_empty) {
            return Err(format!(
                "invalid platform \"{s}\": expected os/arch[/variant]"
            ));
        }
        Ok(Platform::new(os, arch, variant))
    }

    /// A normalised platform.
    pub fn new(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        let (architecture, variant) = normalise_arch(arch, variant.unwrap_or(""));
        Platform {
            os: os.to_ascii_lowercase(),
            architecture,
            variant,
        }
    }

    /// The host's platform (Linux and the architecture berth was built for).
    pub fn host() -> Platform {
        Platform::new("linux", std::env::consts::ARCH, None)
    }

    /// True when an index entry for `os/arch/variant` runs here. A wanted
    /// variant must match exactly; without one, any variant does.
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        let other = Platform::new(os, arch, variant);
        other.os == self.os
            && other.architecture == self.architecture
            && (self.variant.is_none() || other.variant == self.variant)
    }

    /// Picks from `(os, arch, variant)` candidates: the first exact match,
    /// else (when this platform names no variant) the first that matches.
    pub fn select<'a, I>(&self, candidates: I) -> Option<usize>
    where
        I: IntoIterator<Item = (&'a str, &'a str, Option<&'a str>)>,
    {
        let all: Vec<_> = candidates.into_iter().collect();
        all.iter()
            .position(|(o, a, v)| Platform::new(o, a, *v) == *self)
            .or_else(|| all.iter().position(|(o, a, v)| self.matches(o, a, *v)))
    }
}

impl Default for Platform {
    fn default() -> Self {
        Platform::host()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn normalise_arch(arch: &str, variant: &str) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    let v = |s: &str| Some(s.to_string());
    let (a, var) = match arch.as_str() {
        "x86_64" | "x86-64" | "amd64" => ("amd64", (!variant.is_empty()).then_some(variant)),
        "aarch64" | "arm64" => match variant.as_str() {
            "" | "8" | "v8" => ("arm64", v("v8")),
            _ => ("arm64", Some(variant)),
        },
        "armhf" => ("arm", v("v7")),
        "armel" => ("arm", v("v6")),
        "arm" => match variant.as_str() {
            "" | "7" | "v7" => ("arm", v("v7")),
            "5" | "6" | "8" => ("arm", Some(format!("v{variant}"))),
            _ => ("arm", Some(variant)),
        },
        "i386" | "i486" | "i586" | "i686" | "x86" => {
            ("386", (!variant.is_empty()).then_some(variant))
        }
        other => return (other.to_string(), (!variant.is_empty()).then_some(variant)),
    };
    (a.to_string(), var)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let p = Platform::parse("linux/amd64").unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        assert_eq!(
            Platform::parse("linux/arm64").unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert_eq!(
            Platform::parse("linux/aarch64").unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("linux/arm/6").unwrap().to_string(),
            "linux/arm/v6"
        );
        assert_eq!(
            Platform::parse("x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        assert!(Platform::parse("").is_err());
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn selects_from_an_index() {
        let cands = [
            ("linux", "arm", Some("v6")),
            ("linux", "arm", Some("v7")),
            ("linux", "arm64", None),
            ("linux", "amd64", None),
            ("windows", "amd64", None),
        ];
        let pick = |s: &str| Platform::parse(s).unwrap().select(cands.iter().copied());
        assert_eq!(pick("linux/amd64"), Some(3));
        assert_eq!(pick("linux/arm64"), Some(2));
        assert_eq!(pick("linux/arm64/v8"), Some(2));
        assert_eq!(pick("linux/arm"), Some(1));
        assert_eq!(pick("linux/arm/v6"), Some(0));
        assert_eq!(pick("windows/amd64"), Some(4));
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(pick("linux/arm64/v9"), None);
        // amd64 with a variant only matches that variant.
        let v3 = [("linux", "amd64", Some("v3"))];
        assert_eq!(Platform::parse("linux/amd64").unwrap().select(v3), Some(0));
        assert_eq!(Platform::parse("linux/amd64/v2").unwrap().select(v3), None);
    }
}
