//! `personas token`: makes an API token. The token goes to standard output
//! once; what the server is configured with is only its hash.

use anyhow::Context;

use crate::access::{Identity, Role, TokenHash, generate_token};
use crate::cli::Outcome;

pub fn run(role: Role, name: &str, email: &str) -> anyhow::Result<Outcome> {
    let identity = Identity::new(name, email).map_err(anyhow::Error::msg)?;
    let token = generate_token().context("the operating system's random generator failed")?;
    let hash = TokenHash::of(&token);
    println!("{token}");
    eprintln!(
        "\nThe line above is the token; it is shown only now. Give it to {identity}, who sends it as\n  \
         Authorization: Bearer <token>\n\nConfigure the server with its hash, in personas.toml:\n\n\
         [[access.tokens]]\nrole = \"{role}\"\nname = {name:?}\nemail = {email:?}\nhash = \"{hash}\"\n\n\
         or in the environment (one entry per line, or separated by `;`):\n\n\
         PERSONAS_TOKENS='{role} {hash} {identity}'",
        name = identity.name,
        email = identity.email,
    );
    Ok(Outcome::Clean)
}
