//! Profiles: named servers and their tokens, kept in the CLI's own file so that commands
//! that call a server need neither `--server` nor `--token`.
//!
//! The file is `$HOOKLINE_CLI_CONFIG`, else `$XDG_CONFIG_HOME/hookline/cli.toml`, else
//! `~/.config/hookline/cli.toml`, written with mode 0600 (it holds tokens):
//!
//! ```toml
//! default = "prod"          # the profile used when none is named
//!
//! [profile.prod]
//! server = "https://hooks.example.com"
//! token = "…"
//! ```
//!
//! A command's server and token come from `--server`/`--token` (or `HOOKLINE_SERVER`,
//! `HOOKLINE_TOKEN`) first, then from the profile named by `--profile` (or
//! `HOOKLINE_PROFILE`, or the file's `default`), then the server defaults to
//! `http://127.0.0.1:8071`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The server when neither a flag nor a profile names one.
const LOCAL: &str = "http://127.0.0.1:8071";

/// Which server to call, and with which token.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The Hookline server [default: the profile's, else http://127.0.0.1:8071].
    #[arg(long, global = true, env = "HOOKLINE_SERVER")]
    server: Option<String>,
    /// An admin token (or, to read, a token of the application or source concerned)
    /// [default: the profile's].
    #[arg(long, global = true, env = "HOOKLINE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A profile of the CLI's file (see `hookline profile`) [default: the file's default].
    #[arg(long, global = true, env = "HOOKLINE_PROFILE")]
    profile: Option<String>,
}

/// A server to call and its token, as [`Target::resolve`] found them.
#[derive(Debug, Clone)]
pub struct Server {
    pub url: String,
    pub token: String,
}

impl Target {
    /// The server and token: flags and variables first, then the profile.
    pub fn resolve(&self) -> anyhow::Result<Server> {
        let file = Profiles::load()?;
        let profile = match self.profile.as_deref().or(file.default.as_deref()) {
            Some(name) => Some(file.profile.get(name).with_context(|| {
                format!(
                    "no profile `{name}` in {} (see `hookline profile list`)",
                    Profiles::path().display()
                )
            })?),
            None => None,
        };
        let profile_server = profile.map(|p| p.server.as_deref().unwrap_or(LOCAL));
        let url = self
            .server
            .clone()
            .or_else(|| profile_server.map(str::to_owned))
            .unwrap_or_else(|| LOCAL.to_owned());
        // A profile's token goes only to that profile's server, never to one named by
        // --server or HOOKLINE_SERVER.
        let same_server = |p: &&Profile| {
            profile_server.map(|s| s.trim_end_matches('/')) == Some(url.trim_end_matches('/'))
                && p.token.is_some()
        };
        let token = self
            .token
            .clone()
            .or_else(|| profile.filter(same_server).and_then(|p| p.token.clone()))
            .filter(|token| !token.is_empty());
        let Some(token) = token else {
            bail!(
                "a token is needed: --token, HOOKLINE_TOKEN, or a profile (`hookline profile set`)"
            );
        };
        Ok(Server {
            url: url.trim_end_matches('/').to_owned(),
            token,
        })
    }
}

/// The CLI's file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profiles {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default: Option<String>,
    #[serde(default)]
    profile: BTreeMap<String, Profile>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl Profiles {
    fn path() -> PathBuf {
        let var = |name| std::env::var_os(name).filter(|value| !value.is_empty());
        if let Some(path) = var("HOOKLINE_CLI_CONFIG") {
            return path.into();
        }
        let config = var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".config")))
            .unwrap_or_else(|| PathBuf::from("."));
        config.join("hookline").join("cli.toml")
    }

    /// The file, or no profiles when there is none.
    fn load() -> anyhow::Result<Profiles> {
        let path = Profiles::path();
        match std::fs::read_to_string(&path) {
            // The parse error's message only: its default form quotes the line, which may
            // hold a token.
            Ok(text) => toml::from_str(&text).map_err(|error| {
                anyhow::anyhow!(
                    "{} is not a valid profiles file: {}",
                    path.display(),
                    error.message()
                )
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Profiles::default()),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the file readable by its owner only: it holds tokens.
    fn save(&self) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let path = Profiles::path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = toml::to_string(self).context("cannot write the profiles")?;
        let temporary = path.with_extension("toml.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        // `mode` applies only to a file it creates: a leftover one keeps its own.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        std::fs::rename(&temporary, &path)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Keep the servers and tokens the other commands use.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hookline profile set prod --server https://hooks.example.com --token $TOKEN --default
  hookline app list --profile staging
  hookline profile list")]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Add a profile, or change the values given of one.
    Set {
        name: String,
        #[arg(long)]
        server: Option<String>,
        #[arg(long)]
        token: Option<String>,
        /// Use it when no profile is named.
        #[arg(long)]
        default: bool,
    },
    /// The profiles (tokens not shown), the default one marked `*`.
    List,
    /// Forget a profile.
    Remove { name: String },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut file = Profiles::load()?;
    match args.command {
        Command::Set {
            name,
            server,
            token,
            default,
        } => {
            if let Some(server) = &server
                && !(server.starts_with("http://") || server.starts_with("https://"))
            {
                bail!("--server must be an http or https URL");
            }
            let profile = file.profile.entry(name.clone()).or_default();
            profile.server = server.or(profile.server.take());
            profile.token = token.or(profile.token.take());
            if default || file.default.is_none() {
                file.default = Some(name.clone());
            }
            file.save()?;
            eprintln!("profile `{name}` saved in {}", Profiles::path().display());
        }
        Command::List => {
            for (name, profile) in &file.profile {
                let mark = if file.default.as_deref() == Some(name) {
                    "*"
                } else {
                    " "
                };
                let server = profile.server.as_deref().unwrap_or(LOCAL);
                let token = if profile.token.is_some() {
                    "token set"
                } else {
                    "no token"
                };
                println!("{mark} {name}\t{server}\t{token}");
            }
        }
        Command::Remove { name } => {
            if file.profile.remove(&name).is_none() {
                bail!("no profile `{name}`");
            }
            if file.default.as_deref() == Some(name.as_str()) {
                file.default = None;
            }
            file.save()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
