//! `samos passwd`: adds, changes or deletes a user in a Mosquitto-compatible password file.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Parser;
use samos_server::auth::{DEFAULT_ITERATIONS, PasswordFile};

#[derive(Parser)]
pub struct PasswdArgs {
    /// Password file; created if missing.
    file: PathBuf,
    /// User name.
    user: String,
    /// Password (omit to be prompted, or use --stdin). Visible in process lists: avoid on shared hosts.
    #[arg(long, short)]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    stdin: bool,
    /// Delete the user instead.
    #[arg(long, short = 'D')]
    delete: bool,
    /// PBKDF2-SHA512 iterations.
    #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
    iterations: u32,
}

pub fn run(args: PasswdArgs) -> Result<()> {
    let mut file = if args.file.exists() {
        PasswordFile::load(&args.file)?
    } else {
        PasswordFile::default()
    };
    if args.user.contains(':') || args.user.is_empty() {
        bail!("a user name must be non-empty and must not contain ':'");
    }
    if args.delete {
        if !file.remove(&args.user) {
            bail!("no user {:?} in {}", args.user, args.file.display());
        }
    } else {
        let password = match (args.password, args.stdin) {
            (Some(p), _) => p,
            (None, true) => {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                line.trim_end_matches(['\r', '\n']).to_string()
            }
            (None, false) => {
                let p = rpassword::prompt_password("Password: ")?;
                let again = rpassword::prompt_password("Reenter password: ")?;
                if p != again {
                    bail!("passwords do not match");
                }
                p
            }
        };
        if password.is_empty() {
            bail!("empty password");
        }
        file.set(&args.user, &password, args.iterations);
    }
    file.save(&args.file)?;
    std::io::stdout().flush()?;
    Ok(())
}
