//! Loading the effective [`Config`] from its layers, and the errors that stop it.
//!
//! Layers, later wins (figment merges tables key by key):
//!
//! 1. built-in defaults ([`Config::default`]);
//! 2. the config file: `--config`, else the first of [`LoadOptions::search`] that exists
//!    (`/etc/iorelay/iorelay.toml`, then `config/default.toml` in a checkout), else none;
//! 3. the profile file `<environment>.toml` beside the config file, when it exists
//!    (`config/development.toml`, `/etc/iorelay/production.toml`);
//! 4. `IORELAY_<SECTION>__<KEY>` variables: `IORELAY_SERVER__LISTEN=0.0.0.0:3000` sets
//!    `server.listen` (double underscore nests, names are lowercased). A variable without
//!    a double underscore is not a key ([`is_config_var`]): `IORELAY_ENV` selects the
//!    environment (`--env` wins over it), `IORELAY_TOKEN` is the CLI's, others are
//!    ignored.
//!
//! The result is then checked by [`validate`](super::validate::validate). This module
//! reads files and the variables handed to it, never the process environment by itself
//! (only [`LoadOptions::from_process`] does), so tests pass their own variables.
//! It does not watch files or decide what a reload may change.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use figment::error::Kind;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::Config;
use super::validate::{self, Problem};

/// The variable that selects the environment; it is not a config key.
pub const ENV_VAR: &str = "IORELAY_ENV";

/// Prefix of the variables that set config keys.
pub const VAR_PREFIX: &str = "IORELAY_";

/// The separator of a config variable's key path: `IORELAY_SERVER__LISTEN`.
const NESTING: &str = "__";

/// Whether an `IORELAY_*` variable sets a config key: those that name a section and a key
/// with a double underscore (`IORELAY_SERVER__LISTEN`, `IORELAY_NAMESPACES__/CHAT__ECHO`)
/// do, and an unknown one among them is an error like an unknown key in a file. Single
/// names (`IORELAY_ENV`, the CLI's `IORELAY_TOKEN`, a shell's `IORELAY_BIN`) are not.
pub fn is_config_var(name: &str) -> bool {
    name.strip_prefix(VAR_PREFIX)
        .is_some_and(|rest| rest.contains(NESTING))
}

/// Where the config file is looked for when `--config` is not given, in order.
pub const SEARCH_PATHS: &[&str] = &["/etc/iorelay/iorelay.toml", "config/default.toml"];

/// Name of the variable layer's figment metadata, used to recognise it in errors.
const VARS_LAYER: &str = "environment variable";

/// The deployment environment: selects the profile file and nothing else by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Environment {
    /// A checkout on a developer's machine (the default).
    #[default]
    Development,
    /// Automated tests.
    Test,
    /// An installed daemon.
    Production,
}

impl Environment {
    /// Every environment, in the order they are documented.
    pub const ALL: [Environment; 3] = [
        Environment::Development,
        Environment::Test,
        Environment::Production,
    ];

    /// The name used by `--env`, `IORELAY_ENV` and the profile file (`<name>.toml`).
    pub fn name(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Test => "test",
            Environment::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Environment {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Environment::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| ConfigError::UnknownEnvironment { name: s.to_owned() })
    }
}

/// What [`load`] reads. Build it with [`LoadOptions::from_process`] in the daemon; tests
/// fill it in by hand.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--config`: this file and no other; a missing file is an error.
    pub file: Option<PathBuf>,
    /// `--env`; when `None`, `IORELAY_ENV` from [`vars`](Self::vars), else development.
    pub env_name: Option<String>,
    /// The environment variables to read `IORELAY_*` from (a snapshot of the process's).
    pub vars: Vec<(String, String)>,
    /// When `file` is `None`: candidate config files, the first that exists is used.
    pub search: Vec<PathBuf>,
}

impl LoadOptions {
    /// Options for the daemon: the command-line values, this process's environment and
    /// the standard [`SEARCH_PATHS`].
    pub fn from_process(file: Option<PathBuf>, env_name: Option<String>) -> Self {
        LoadOptions {
            file,
            env_name,
            vars: std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect(),
            search: SEARCH_PATHS.iter().map(PathBuf::from).collect(),
        }
    }

    /// The config file these options select (`--config`, else the first search path
    /// that exists), for log lines; `"built-in defaults"` when there is none.
    pub fn describe(&self) -> String {
        self.file
            .clone()
            .or_else(|| self.search.iter().find(|p| p.exists()).cloned())
            .map_or_else(
                || "built-in defaults".to_owned(),
                |p| p.display().to_string(),
            )
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The outcome of a successful [`load`].
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective, validated configuration.
    pub config: Config,
    /// The environment that was selected.
    pub environment: Environment,
    /// The files actually read, in layering order (config file, then profile file).
    pub sources: Vec<PathBuf>,
}

/// Why no config could be loaded. Every variant's `Display` is one line per problem,
/// each naming the key (or file) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--env` or `IORELAY_ENV` names no known environment.
    #[error(
        "unknown environment {name:?} (from {ENV_VAR} or --env): expected development, test or production"
    )]
    UnknownEnvironment {
        /// The name given.
        name: String,
    },
    /// The file named by `--config` does not exist.
    #[error("{}: config file not found", path.display())]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// A config or profile file exists but cannot be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: io::Error,
    },
    /// A layer holds something that is not a config: bad TOML, an unknown key, a value of
    /// the wrong type, a variable name that names no key.
    #[error("{}", malformed_line(key, reason, origin.as_deref()))]
    Malformed {
        /// Dotted key (`engine.ping_interval`, `namespaces./chat.route`); empty when the
        /// problem is not in one key (a TOML syntax error).
        key: String,
        /// What is wrong, in one line.
        reason: String,
        /// Where the value came from (`config/default.toml`, `environment variable
        /// IORELAY_SERVER__LISTEN`), when known.
        origin: Option<String>,
    },
    /// The config is well-formed but breaks rules that span keys or values; all of them.
    #[error("{}", problem_lines(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems, one line each, for callers that prefix or indent every line.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(problems) => problems.iter().map(Problem::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn malformed_line(key: &str, reason: &str, origin: Option<&str>) -> String {
    match (key.is_empty(), origin) {
        (false, Some(origin)) => format!("{key}: {reason} (from {origin})"),
        (false, None) => format!("{key}: {reason}"),
        (true, Some(origin)) => format!("{origin}: {reason}"),
        (true, None) => reason.to_owned(),
    }
}

fn problem_lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads, merges and validates the config described by `opts`.
pub fn load(opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let env_name = match (&opts.env_name, opts.var(ENV_VAR)) {
        (Some(name), _) => Some(name.as_str()),
        // An empty `IORELAY_ENV=` (as an /etc/default file may leave it) means unset.
        (None, Some(name)) if !name.is_empty() => Some(name),
        (None, _) => None,
    };
    let environment = match env_name {
        Some(name) => name.parse()?,
        None => Environment::default(),
    };

    let file = match &opts.file {
        Some(path) if !path.exists() => return Err(ConfigError::Missing { path: path.clone() }),
        Some(path) => Some(path.clone()),
        None => opts.search.iter().find(|p| p.exists()).cloned(),
    };
    let profile = file.as_deref().and_then(|file| {
        let profile = profile_path(file, environment);
        // `--config config/production.toml --env production` names one file twice.
        (profile.exists() && !same_file(file, &profile)).then_some(profile)
    });
    let sources: Vec<PathBuf> = file.into_iter().chain(profile).collect();

    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    for path in &sources {
        figment = figment.merge(TomlFile::read(path)?);
    }
    figment = figment.merge(Vars::new(&opts.vars)?);

    let config: Config = figment.extract().map_err(|e| malformed(&figment, e))?;
    validate::validate(&config).map_err(ConfigError::Invalid)?;
    Ok(Loaded {
        config,
        environment,
        sources,
    })
}

/// `<dir of the config file>/<environment>.toml`.
fn profile_path(config_file: &Path, environment: Environment) -> PathBuf {
    let name = format!("{}.toml", environment.name());
    match config_file.parent() {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A TOML file as a figment layer. Read up front, so that a file that cannot be read is
/// reported with its path and the I/O error, and so that it is read at exactly the path
/// given (figment's `Toml::file` looks for a relative path in parent directories too).
struct TomlFile {
    path: PathBuf,
    text: String,
}

impl TomlFile {
    fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        Ok(TomlFile {
            path: path.to_owned(),
            text,
        })
    }
}

impl Provider for TomlFile {
    fn metadata(&self) -> Metadata {
        Metadata::from("TOML file", self.path.as_path())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Toml::string(&self.text).data()
    }
}

/// The `IORELAY_*` variables as a figment layer. Values are read the way figment reads
/// variables: `4` is a number, `true` a boolean, `[polling]` an array, anything else a
/// string; quote a value (`IORELAY_SERVER__USER='"1000"'`) to force a string.
struct Vars {
    dict: Dict,
}

impl Vars {
    fn new(vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut sorted: Vec<&(String, String)> =
            vars.iter().filter(|(k, _)| is_config_var(k)).collect();
        // Deterministic when two variables collide (`IORELAY_SERVER` and
        // `IORELAY_SERVER__LISTEN`): the longer, more specific name is applied last.
        sorted.sort();
        let mut dict = Dict::new();
        for (name, value) in sorted {
            let path: Vec<String> = name[VAR_PREFIX.len()..]
                .split(NESTING)
                .map(str::to_ascii_lowercase)
                .collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::Malformed {
                    key: name.clone(),
                    reason: "names no config key: the parts between double underscores must \
                             not be empty"
                        .to_owned(),
                    origin: None,
                });
            }
            let parsed = value
                .parse::<Value>()
                .expect("parsing a figment value is infallible");
            insert(&mut dict, &path, parsed);
        }
        Ok(Vars { dict })
    }
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

impl Provider for Vars {
    fn metadata(&self) -> Metadata {
        Metadata::named(VARS_LAYER).interpolater(|_: &Profile, keys: &[&str]| {
            format!("{VAR_PREFIX}{}", keys.join("__").to_ascii_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Turns figment's error into one [`ConfigError::Malformed`]: the full dotted key, a
/// reason in the config's own terms, and the layer the offending value came from.
fn malformed(figment: &Figment, err: figment::Error) -> ConfigError {
    // Figment chains one error per failing layer, in layering order; the first is the one
    // a reader meets first, and fixing it may change the others.
    let err = err
        .into_iter()
        .next()
        .expect("a figment error holds at least one");
    let path = err.path.clone();
    let found = locate(figment, &path);
    let from_vars = found.as_ref().is_some_and(|f| f.from_vars);
    let reason = match &err.kind {
        // Figment has already put the unknown key at the end of the path.
        Kind::UnknownField(_, expected) => {
            format!("unknown key; expected one of {}", expected.join(", "))
        }
        Kind::Message(msg) if msg == "invalid socket address syntax" => {
            let value = found.as_ref().and_then(|f| f.text.clone());
            format!(
                "invalid address{}: expected an IP address and port such as \"127.0.0.1:3000\"",
                value.map(|v| format!(" {v}")).unwrap_or_default()
            )
        }
        Kind::Message(msg) => one_line(msg),
        Kind::InvalidType(actual, expected) if expected == "a string" && from_vars => {
            format!(
                "expected a string, found {actual}; quote the value ('\"…\"') to pass digits \
                 or true/false as a string"
            )
        }
        Kind::InvalidType(actual, expected) => {
            format!("expected {}, found {actual}", friendly(expected))
        }
        Kind::InvalidValue(actual, expected) => {
            format!("invalid value {actual}: expected {}", friendly(expected))
        }
        Kind::UnknownVariant(found, expected) => {
            format!(
                "unknown value {found:?}; expected one of {}",
                expected.join(", ")
            )
        }
        other => other.to_string(),
    };
    // For the keys whose value is an externally tagged enum, serde's words about variants
    // ("expected newtype variant, found unit variant") say little; spell out the forms.
    let about_variant = match &err.kind {
        Kind::UnknownVariant(..) => true,
        Kind::InvalidType(_, expected) => {
            expected.contains("variant") || expected.starts_with("enum")
        }
        _ => false,
    };
    let reason = match enum_forms(&path) {
        Some(forms) if about_variant => match &err.kind {
            Kind::UnknownVariant(value, _) => format!("unknown value {value:?}; expected {forms}"),
            _ => match found.as_ref().and_then(|f| f.text.as_deref()) {
                Some(text) => format!("expected {forms}, found {text}"),
                None => format!("expected {forms}"),
            },
        },
        _ => reason,
    };
    let origin = found
        .and_then(|f| f.origin)
        .or_else(|| err.metadata.as_ref().and_then(file_of));
    ConfigError::Malformed {
        key: path.join("."),
        reason,
        origin,
    }
}

/// serde's words for a few expectations, replaced by the config's spelling.
fn friendly(expected: &str) -> String {
    match expected {
        "a duration" => "a duration such as \"300ms\", \"25s\" or \"1m\"".to_owned(),
        other if other.starts_with("struct ") => "a table".to_owned(),
        other if other.starts_with("a map") => "a table".to_owned(),
        other => other.to_owned(),
    }
}

/// The accepted forms of the enum-valued keys, for their error messages.
fn enum_forms(path: &[String]) -> Option<&'static str> {
    const JOIN: &str = r#""any", "none" or { pattern = "<regex>" }"#;
    const ROUTE: &str =
        r#""rooms", "namespace", "sender", "none", "discard" or { room = "<name>" }"#;
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["namespaces", _, "join", ..] => Some(JOIN),
        ["namespaces", _, "route", ..] | ["namespaces", _, "events", _, "route", ..] => Some(ROUTE),
        _ => None,
    }
}

/// What the merged layers hold at an error's path.
struct Found {
    /// The layer that supplied the value at the path, or at the deepest table above it
    /// that exists.
    origin: Option<String>,
    /// Whether that layer is the `IORELAY_*` variables.
    from_vars: bool,
    /// The value itself, quoted, when the whole path exists and holds a string.
    text: Option<String>,
}

fn locate(figment: &Figment, path: &[String]) -> Option<Found> {
    let root = figment.extract::<Value>().ok()?;
    let mut value = &root;
    let mut depth = 0;
    for segment in path {
        match value.as_dict().and_then(|d| d.get(segment)) {
            Some(v) => {
                value = v;
                depth += 1;
            }
            None => break,
        }
    }
    if depth == 0 {
        return None;
    }
    let text = match value {
        Value::String(_, s) if depth == path.len() => Some(format!("{s:?}")),
        _ => None,
    };
    let metadata = figment.get_metadata(value.tag())?;
    let from_vars = metadata.name == VARS_LAYER;
    let origin = if from_vars {
        let name = metadata.interpolate(&Profile::Default, &path[..depth]);
        Some(format!("{VARS_LAYER} {name}"))
    } else {
        file_of(metadata)
    };
    Some(Found {
        origin,
        from_vars,
        text,
    })
}

fn file_of(metadata: &Metadata) -> Option<String> {
    let path = metadata.source.as_ref()?.file_path()?;
    Some(path.display().to_string())
}

/// Folds a multi-line message (TOML's errors draw the offending line) into one line.
fn one_line(msg: &str) -> String {
    let lines: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines
        .first()
        .is_some_and(|l| l.starts_with("TOML parse error"))
    {
        // "TOML parse error at line 2, column 3", a drawing of the line, the explanation.
        let after_drawing = lines
            .iter()
            .rposition(|l| l.contains('^'))
            .map_or(1, |i| i + 1);
        let explanation = lines[after_drawing.min(lines.len())..].join("; ");
        return format!("{}: {explanation}", lines[0]);
    }
    lines.join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::config::{JoinPolicy, LogFormat, NamespaceConfig, Route, Size, Transport, Workers};

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("iorelay-config-{name}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, file: &str, text: &str) -> PathBuf {
            let path = self.0.join(file);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn opts(file: Option<&Path>, env: Option<&str>, vars: &[(&str, &str)]) -> LoadOptions {
        LoadOptions {
            file: file.map(Path::to_owned),
            env_name: env.map(str::to_owned),
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            search: Vec::new(),
        }
    }

    fn repo_config(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name)
    }

    /// Loads a file on its own (no profile beside it), with `vars`.
    fn load_text(text: &str, vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let dir = TempDir::new("text");
        let file = dir.write("iorelay.toml", text);
        load(&opts(Some(&file), None, vars))
    }

    /// The `config_load` fuzz target's input `b"\0\0SERVER__MAX_CONNECTIONS=18446744073709551615"`
    /// (an empty file and profile, one variable): it loaded, and `check-config` then panicked
    /// rendering it. It is refused, naming the key.
    #[test]
    fn a_variable_too_large_for_a_config_file_is_refused() {
        let err = load(&opts(
            None,
            None,
            &[("IORELAY_SERVER__MAX_CONNECTIONS", "18446744073709551615")],
        ))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("server.max_connections: is 18446744073709551615"),
            "{err}"
        );
    }

    /// The key, reason and origin of a `Malformed` error; panics on anything else.
    fn malformed(result: Result<Loaded, ConfigError>) -> (String, String, Option<String>) {
        match result {
            Err(ConfigError::Malformed {
                key,
                reason,
                origin,
            }) => (key, reason, origin),
            Err(other) => panic!("expected Malformed, got {other}"),
            Ok(loaded) => panic!("expected an error, loaded {:?}", loaded.config),
        }
    }

    #[test]
    fn layers_apply_in_order_defaults_file_profile_vars() {
        let dir = TempDir::new("layers");
        let file = dir.write(
            "iorelay.toml",
            r#"
            [server]
            listen = "127.0.0.1:4000"
            workers = 2
            [log]
            level = "debug"
            "#,
        );
        let profile = dir.write(
            "development.toml",
            r#"
            [server]
            listen = "127.0.0.1:5000"
            workers = 3
            "#,
        );
        let loaded = load(&opts(
            Some(&file),
            None,
            &[("IORELAY_SERVER__WORKERS", "4")],
        ))
        .unwrap();
        let c = &loaded.config;
        assert_eq!(c.server.listen.port(), 5000, "profile over file");
        assert_eq!(
            c.server.workers,
            Workers::Count(4),
            "variables over profile"
        );
        assert_eq!(c.log.level, "debug", "file over defaults");
        assert_eq!(c.server.admin_listen, Config::default().server.admin_listen);
        assert_eq!(loaded.environment, Environment::Development);
        assert_eq!(loaded.sources, [file, profile]);
    }

    #[test]
    fn iorelay_env_selects_the_profile_and_env_flag_wins() {
        let dir = TempDir::new("envsel");
        let file = dir.write("iorelay.toml", "[log]\nlevel = \"file\"\n");
        dir.write("development.toml", "[log]\nlevel = \"development\"\n");
        let test = dir.write("test.toml", "[log]\nlevel = \"test\"\n");
        dir.write("production.toml", "[log]\nlevel = \"production\"\n");

        let by_var = load(&opts(Some(&file), None, &[("IORELAY_ENV", "test")])).unwrap();
        assert_eq!(by_var.environment, Environment::Test);
        assert_eq!(by_var.config.log.level, "test");
        assert_eq!(by_var.sources, [file.clone(), test]);

        let by_flag = load(&opts(
            Some(&file),
            Some("production"),
            &[("IORELAY_ENV", "test")],
        ))
        .unwrap();
        assert_eq!(by_flag.environment, Environment::Production);
        assert_eq!(by_flag.config.log.level, "production");

        let empty_var = load(&opts(Some(&file), None, &[("IORELAY_ENV", "")])).unwrap();
        assert_eq!(empty_var.environment, Environment::Development);
        assert_eq!(empty_var.config.log.level, "development");
    }

    #[test]
    fn an_unknown_environment_names_its_selectors() {
        let err = load(&opts(None, None, &[("IORELAY_ENV", "staging")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown environment \"staging\" (from IORELAY_ENV or --env): expected \
             development, test or production"
        );
        assert!(matches!(
            load(&opts(None, Some("Production"), &[])),
            Err(ConfigError::UnknownEnvironment { .. })
        ));
        for e in Environment::ALL {
            assert_eq!(e.name().parse::<Environment>().unwrap(), e);
        }
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let dir = TempDir::new("missing");
        let found = dir.write("found.toml", "");
        let mut o = opts(Some(&dir.0.join("nope.toml")), None, &[]);
        o.search = vec![found];
        let err = load(&o).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { .. }), "{err}");
        assert!(
            err.to_string()
                .ends_with("nope.toml: config file not found"),
            "{err}"
        );
    }

    #[test]
    fn an_unreadable_config_file_is_an_error() {
        let dir = TempDir::new("unreadable");
        let err = load(&opts(Some(&dir.0), None, &[])).unwrap_err();
        assert!(matches!(err, ConfigError::Unreadable { .. }), "{err}");
        assert!(err.to_string().contains("cannot read config file"), "{err}");
    }

    #[test]
    fn search_takes_the_first_file_that_exists() {
        let dir = TempDir::new("search");
        let second = dir.write("second.toml", "[log]\nlevel = \"second\"\n");
        let third = dir.write("third.toml", "[log]\nlevel = \"third\"\n");
        let mut o = opts(None, None, &[]);
        o.search = vec![dir.0.join("first.toml"), second.clone(), third];
        let loaded = load(&o).unwrap();
        assert_eq!(loaded.config.log.level, "second");
        assert_eq!(loaded.sources, [second]);

        o.search = vec![dir.0.join("absent.toml")];
        let bare = load(&o).unwrap();
        assert_eq!(bare.config, Config::default());
        assert!(bare.sources.is_empty());
    }

    #[test]
    fn a_profile_given_as_the_config_file_is_read_once() {
        let dir = TempDir::new("once");
        let file = dir.write("production.toml", "[log]\nformat = \"json\"\n");
        let loaded = load(&opts(Some(&file), Some("production"), &[])).unwrap();
        assert_eq!(loaded.sources, [file]);
    }

    #[test]
    fn unknown_keys_in_a_file_are_named() {
        let cases = [
            ("[server]\nlisen = 1\n", "server.lisen"),
            ("bogus = 1\n", "bogus"),
            ("[namespaces.\"/x\"]\nbogus = 1\n", "namespaces./x.bogus"),
            (
                "[namespaces.\"/x\".limits]\nbogus = 1\n",
                "namespaces./x.limits.bogus",
            ),
            (
                "[namespaces.\"/x\".events.\"y\"]\nbogus = 1\n",
                "namespaces./x.events.y.bogus",
            ),
        ];
        for (text, expected) in cases {
            let dir = TempDir::new("unknown");
            let file = dir.write("iorelay.toml", text);
            let (key, reason, origin) = malformed(load(&opts(Some(&file), None, &[])));
            assert_eq!(key, expected);
            assert!(
                reason.starts_with("unknown key; expected one of"),
                "{reason}"
            );
            assert_eq!(origin, Some(file.display().to_string()));
        }
    }

    #[test]
    fn variables_without_a_double_underscore_are_not_config() {
        let loaded = load(&opts(
            None,
            None,
            &[
                ("IORELAY_BIN", "/usr/local/bin/iorelay"),
                ("IORELAY_TOKEN", "a-token-for-the-cli"),
                ("IORELAY_LISTEN", "0.0.0.0:1"),
                ("IORELAY_SERVER__WORKERS", "2"),
            ],
        ))
        .unwrap();
        assert_eq!(loaded.config.server.listen, Config::default().server.listen);
        assert_eq!(
            loaded.config.server.workers,
            crate::config::Workers::Count(2)
        );
        assert!(is_config_var("IORELAY_API__TOKENS"));
        assert!(!is_config_var("IORELAY_ENV"));
        assert!(!is_config_var("OTHER_SERVER__LISTEN"));
    }

    #[test]
    fn unknown_keys_in_variables_are_named() {
        let (key, reason, origin) = malformed(load(&opts(
            None,
            None,
            &[("IORELAY_SERVER__LISEN", "0.0.0.0:3000")],
        )));
        assert_eq!(key, "server.lisen");
        assert!(reason.contains("listen, admin_listen"), "{reason}");
        assert_eq!(
            origin.as_deref(),
            Some("environment variable IORELAY_SERVER__LISEN")
        );

        let (key, ..) = malformed(load(&opts(None, None, &[("IORELAY_LISTEN__X", "x")])));
        assert_eq!(key, "listen", "the unknown section is named");

        let (key, reason, _) = malformed(load(&opts(
            None,
            None,
            &[("IORELAY_SERVER____LISTEN", "x")],
        )));
        assert_eq!(key, "IORELAY_SERVER____LISTEN");
        assert!(reason.contains("double underscores"), "{reason}");
    }

    #[test]
    fn variables_set_nested_keys_of_every_type() {
        let loaded = load(&opts(
            None,
            None,
            &[
                ("IORELAY_SERVER__LISTEN", "0.0.0.0:3000"),
                ("IORELAY_SERVER__WORKERS", "auto"),
                ("IORELAY_SERVER__USER", "\"1000\""),
                ("IORELAY_SERVER__MAX_CONNECTIONS", "5"),
                ("IORELAY_LOG__FORMAT", "json"),
                ("IORELAY_ENGINE__TRANSPORTS", "[websocket]"),
                ("IORELAY_ENGINE__ECHO_PATH", "/engine.io/"),
                ("PATH", "/usr/bin"),
            ],
        ))
        .unwrap();
        let c = loaded.config;
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:3000");
        assert_eq!(c.server.workers, Workers::Auto);
        assert_eq!(c.server.user.as_deref(), Some("1000"));
        assert_eq!(c.server.max_connections, 5);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.engine.transports, [Transport::Websocket]);
        assert_eq!(c.engine.echo_path.as_deref(), Some("/engine.io/"));
    }

    #[test]
    fn digits_for_a_string_key_tell_how_to_quote() {
        let (key, reason, _) =
            malformed(load(&opts(None, None, &[("IORELAY_SERVER__USER", "1000")])));
        assert_eq!(key, "server.user");
        assert!(reason.contains("quote the value"), "{reason}");
    }

    #[test]
    fn sizes_and_durations_read_human_strings() {
        let loaded = load_text(
            r#"
            [engine]
            ping_timeout = "1m"
            max_payload = "1MiB"
            [namespaces."/".limits]
            max_event_size = "512 B"
            "#,
            &[
                ("IORELAY_ENGINE__PING_INTERVAL", "300ms"),
                ("IORELAY_ENGINE__UPGRADE_TIMEOUT", "25s"),
            ],
        )
        .unwrap();
        let e = &loaded.config.engine;
        assert_eq!(e.ping_interval, Duration::from_millis(300));
        assert_eq!(e.ping_timeout, Duration::from_secs(60));
        assert_eq!(e.upgrade_timeout, Duration::from_secs(25));
        assert_eq!(e.max_payload, Size(1_048_576));
        assert_eq!(
            loaded.config.namespaces["/"].limits.max_event_size,
            Size(512)
        );

        let from_vars = |value: &str| {
            load(&opts(None, None, &[("IORELAY_ENGINE__MAX_PAYLOAD", value)]))
                .map(|l| l.config.engine.max_payload)
        };
        assert_eq!(from_vars("2000000").unwrap(), Size(2_000_000));
        assert_eq!(from_vars("2MB").unwrap(), Size(2_000_000));
        assert_eq!(from_vars("64KB").unwrap(), Size(64_000));
    }

    #[test]
    fn a_bare_number_is_not_a_duration() {
        let (key, reason, origin) = malformed(load(&opts(
            None,
            None,
            &[("IORELAY_ENGINE__PING_INTERVAL", "25")],
        )));
        assert_eq!(key, "engine.ping_interval");
        assert!(
            reason.starts_with("expected a duration such as \"300ms\""),
            "{reason}"
        );
        assert_eq!(
            origin.as_deref(),
            Some("environment variable IORELAY_ENGINE__PING_INTERVAL")
        );
    }

    #[test]
    fn workers_take_auto_and_refuse_zero() {
        let auto = load_text("[server]\nworkers = \"auto\"\n", &[]).unwrap();
        assert_eq!(auto.config.server.workers, Workers::Auto);

        let (key, reason, _) = malformed(load_text("[server]\nworkers = 0\n", &[]));
        assert_eq!(key, "server.workers");
        assert!(reason.contains("at least 1"), "{reason}");

        let (key, reason, origin) =
            malformed(load(&opts(None, None, &[("IORELAY_SERVER__WORKERS", "0")])));
        assert_eq!(key, "server.workers");
        assert!(reason.contains("at least 1"), "{reason}");
        assert!(origin.is_some_and(|o| o.ends_with("IORELAY_SERVER__WORKERS")));
    }

    #[test]
    fn join_and_route_read_every_form() {
        let loaded = load_text(
            r#"
            [namespaces."/a"]
            join = { pattern = "^[a-z]+$" }
            route = { room = "dashboard" }
            [namespaces."/a".events."x"]
            route = "sender"
            [namespaces."/b"]
            join = "none"
            route = "discard"
            [namespaces."/c"]
            join = "any"
            route = "namespace"
            "#,
            &[],
        )
        .unwrap();
        let ns = &loaded.config.namespaces;
        assert_eq!(ns["/a"].join, JoinPolicy::Pattern("^[a-z]+$".to_owned()));
        assert_eq!(ns["/a"].route, Route::Room("dashboard".to_owned()));
        assert_eq!(ns["/a"].events["x"].route, Some(Route::Sender));
        assert_eq!(ns["/b"].join, JoinPolicy::None);
        assert_eq!(ns["/b"].route, Route::Discard);
        assert_eq!(ns["/c"].route, Route::Namespace);
    }

    #[test]
    fn bad_join_and_route_values_spell_out_the_forms() {
        let (key, reason, _) = malformed(load_text("[namespaces.\"/\"]\njoin = \"some\"\n", &[]));
        assert_eq!(key, "namespaces./.join");
        assert_eq!(
            reason,
            r#"unknown value "some"; expected "any", "none" or { pattern = "<regex>" }"#
        );

        let (key, reason, _) = malformed(load_text("[namespaces.\"/\"]\nroute = \"room\"\n", &[]));
        assert_eq!(key, "namespaces./.route");
        assert!(
            reason.contains(r#"{ room = "<name>" }, found "room""#),
            "{reason}"
        );

        let (key, reason, _) = malformed(load_text(
            "[namespaces.\"/\".events.m]\nroute = { rooom = \"x\" }\n",
            &[],
        ));
        assert_eq!(key, "namespaces./.events.m.route.rooom");
        assert!(
            reason.starts_with("unknown value \"rooom\"; expected \"rooms\""),
            "{reason}"
        );
    }

    #[test]
    fn toml_syntax_errors_fit_one_line_and_name_the_file() {
        let dir = TempDir::new("syntax");
        let file = dir.write("iorelay.toml", "[server\nlisten = 1\n");
        let err = load(&opts(Some(&file), None, &[])).unwrap_err();
        let line = err.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with(&format!("{}: TOML parse error at line 1", file.display())),
            "{line}"
        );
    }

    #[test]
    fn of_two_broken_files_the_first_is_reported() {
        let dir = TempDir::new("twobroken");
        let file = dir.write("iorelay.toml", "[server\n");
        dir.write("development.toml", "[log\n");
        let (key, _, origin) = malformed(load(&opts(Some(&file), None, &[])));
        assert_eq!(key, "");
        assert_eq!(origin, Some(file.display().to_string()));
    }

    #[test]
    fn malformed_lines_read_key_reason_origin() {
        let err = ConfigError::Malformed {
            key: "engine.ping_interval".to_owned(),
            reason: "expected a duration".to_owned(),
            origin: Some("config/default.toml".to_owned()),
        };
        assert_eq!(
            err.to_string(),
            "engine.ping_interval: expected a duration (from config/default.toml)"
        );
    }

    #[test]
    fn validation_reports_every_problem_one_line_each() {
        let err = load_text(
            r#"
            [engine]
            ping_interval = "0s"
            write_queue = 0
            [namespaces."/chat"]
            route = { room = "$all" }
            [namespaces."/chat".limits]
            burst = 0
            "#,
            &[],
        )
        .unwrap_err();
        let ConfigError::Invalid(problems) = &err else {
            panic!("expected Invalid, got {err}");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "engine.ping_interval",
                "engine.write_queue",
                "namespaces./chat.route.room",
                "namespaces./chat.limits.burst",
            ]
        );
        let text = err.to_string();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert_eq!(
            text.lines().next(),
            Some("engine.ping_interval: must be greater than 0")
        );
        assert_eq!(err.lines().len(), 4);
    }

    #[test]
    fn default_toml_is_the_built_in_defaults_plus_root_namespace() {
        // Copied alone, so that no profile file beside it is merged.
        let text = std::fs::read_to_string(repo_config("default.toml")).unwrap();
        let loaded = load_text(&text, &[]).unwrap();
        let mut expected = Config::default();
        // The one departure from the built-ins: "/" recovers dropped connections, for
        // the built-in demo page (static/index.html), which shows it.
        let root = NamespaceConfig {
            recovery: Some(crate::config::RecoveryConfig::default()),
            ..NamespaceConfig::default()
        };
        expected.namespaces.insert("/".to_owned(), root);
        assert_eq!(loaded.config, expected);
    }

    #[test]
    fn every_repository_config_file_loads_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        assert!(files.len() >= 5, "{files:?}");
        for file in &files {
            for env in Environment::ALL {
                if let Err(e) = load(&opts(Some(file), Some(env.name()), &[])) {
                    panic!("{} with --env {env}: {e}", file.display());
                }
            }
        }
    }

    #[test]
    fn profiles_over_default_toml() {
        let default = repo_config("default.toml");
        let dev = load(&opts(Some(&default), None, &[])).unwrap();
        assert_eq!(
            dev.sources,
            [default.clone(), repo_config("development.toml")]
        );
        assert_eq!(dev.config.server.listen.to_string(), "127.0.0.1:3000");

        let test = load(&opts(Some(&default), Some("test"), &[])).unwrap();
        assert_eq!(test.config.server.listen.port(), 0);
        assert!(test.config.server.listen.ip().is_loopback());

        let prod = load(&opts(Some(&default), Some("production"), &[]))
            .unwrap()
            .config;
        assert_eq!(prod.log.format, LogFormat::Json);
        assert_eq!(prod.server.listen.to_string(), "0.0.0.0:3000");
        assert_eq!(prod.server.workers, Workers::Auto);
        assert_eq!(prod.server.user.as_deref(), Some("iorelay"));
        assert!(prod.server.admin_listen.ip().is_loopback());
    }

    #[test]
    fn conformance_toml_is_what_the_suites_expect() {
        let text = std::fs::read_to_string(repo_config("conformance.toml")).unwrap();
        let c = load_text(&text, &[]).unwrap().config;
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(c.engine.ping_interval, Duration::from_millis(300));
        assert_eq!(c.engine.ping_timeout, Duration::from_millis(200));
        assert_eq!(c.engine.max_payload, Size(1_000_000));
        assert_eq!(c.engine.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.engine.echo_path.as_deref(), Some("/engine.io/"));
        assert_eq!(c.namespaces.keys().collect::<Vec<_>>(), ["/", "/custom"]);
        for ns in c.namespaces.values() {
            assert_eq!(ns.greet.as_deref(), Some("auth"));
            assert_eq!(ns.join, JoinPolicy::None);
            assert!(!ns.presence);
            assert_eq!(ns.route, Route::Discard);
            assert_eq!(ns.limits.events_per_second, 100_000);
            assert_eq!(ns.limits.burst, 100_000);
            assert_eq!(ns.limits.max_event_size, c.engine.max_payload);
        }
        let root = &c.namespaces["/"];
        assert_eq!(root.events["message"].route, Some(Route::Sender));
        assert_eq!(
            root.events["message"].rename.as_deref(),
            Some("message-back")
        );
        assert_eq!(root.events["message-with-ack"].route, Some(Route::Discard));
        assert_eq!(
            root.events["message-with-ack"].ack,
            crate::config::AckReply::Echo
        );
        assert!(c.namespaces["/custom"].events.is_empty());
    }

    #[test]
    fn render_of_a_loaded_config_loads_back_the_same() {
        for name in ["default.toml", "conformance.toml"] {
            let loaded = load(&opts(Some(&repo_config(name)), Some("production"), &[])).unwrap();
            let text = validate::render(&loaded.config);
            let back = load_text(&text, &[]).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(back.config, loaded.config, "{text}");
        }
    }
}
