//! API tokens and the roles they carry. Only a token's SHA-256 is ever
//! configured or kept; the token itself is shown once, when
//! `personas token` makes it.
//!
//! A plain SHA-256 (not a password hash) is enough because tokens are 256
//! random bits, never chosen by people: there is no dictionary to try, and a
//! slow hash would only slow every request down.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::persona::model::ContentHash;

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read a private registry.
    Reader,
    /// Change the settings of personas that are not protected.
    Editor,
    /// Change the settings of every persona, protected ones too.
    Maintainer,
}

impl Role {
    pub const ALL: [(&'static str, Role); 3] = [
        ("reader", Role::Reader),
        ("editor", Role::Editor),
        ("maintainer", Role::Maintainer),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Editor => "editor",
            Role::Maintainer => "maintainer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, role)| *role)
            .ok_or_else(|| format!("{text:?} is not a role (reader, editor or maintainer)"))
    }
}

/// A person as git records them: the author of the commits a token makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

impl Identity {
    /// Checks that the name and email can stand in a commit header.
    pub fn new(name: &str, email: &str) -> Result<Identity, String> {
        let (name, email) = (name.trim(), email.trim());
        // `;` separates entries of PERSONAS_TOKENS; the rest would break a commit header.
        let unusable = |text: &str| text.is_empty() || text.contains(['<', '>', ';', '\n', '\r', '\0']);
        if unusable(name) {
            return Err(format!(
                "{name:?} cannot be a commit author's name (empty, or contains <, >, ; or a line break)"
            ));
        }
        if unusable(email) || !email.contains('@') {
            return Err(format!("{email:?} is not an email address"));
        }
        Ok(Identity {
            name: name.to_string(),
            email: email.to_string(),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} <{}>", self.name, self.email)
    }
}

/// `Name <email>`, as git writes it.
impl FromStr for Identity {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || format!("{text:?} is not an identity; write it as `Name <email>`");
        let (name, rest) = text.split_once('<').ok_or_else(malformed)?;
        let email = rest.strip_suffix('>').ok_or_else(malformed)?;
        Identity::new(name, email)
    }
}

/// The SHA-256 of a token, written `sha256:<64 hex digits>` like every
/// digest in the registry.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash(ContentHash);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(ContentHash(Sha256::digest(token.as_bytes()).into()))
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not the token, but logs have no use for it either.
        formatter.write_str("sha256:…")
    }
}

impl FromStr for TokenHash {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // The text is not repeated: a token pasted where its hash belongs must not reach a log.
        text.parse()
            .map(TokenHash)
            .map_err(|_| "not a token hash: expected sha256: and 64 hex digits, as `personas token` prints".to_string())
    }
}

/// One configured token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub hash: TokenHash,
    pub role: Role,
    pub identity: Identity,
}

/// Reads `PERSONAS_TOKENS`: one token per line (or separated by `;`), each
/// `ROLE sha256:HEX Name <email>`.
pub fn parse_token_list(text: &str) -> Result<Vec<ApiToken>, String> {
    text.split(['\n', ';'])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(index, entry)| {
            let problem = |reason: String| format!("token {} of PERSONAS_TOKENS: {reason}", index + 1);
            let mut parts = entry.splitn(3, char::is_whitespace);
            let role = parts.next().unwrap_or_default().parse::<Role>().map_err(problem)?;
            let hash = parts.next().unwrap_or_default().parse::<TokenHash>().map_err(problem)?;
            let identity = parts
                .next()
                .unwrap_or_default()
                .trim()
                .parse::<Identity>()
                .map_err(problem)?;
            Ok(ApiToken { hash, role, identity })
        })
        .collect()
}

/// The configured tokens, looked up by the token a request presents.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<ApiToken>);

impl Tokens {
    pub fn new(tokens: Vec<ApiToken>) -> Tokens {
        Tokens(tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The token `presented` is, if any. Every configured hash is compared,
    /// each in constant time, so the answer's timing does not say how much
    /// of a guess was right or which entry matched.
    pub fn find(&self, presented: &str) -> Option<&ApiToken> {
        let hash = TokenHash::of(presented);
        let mut found = None;
        for token in &self.0 {
            if bool::from(token.hash.0.0.ct_eq(&hash.0.0)) {
                found = Some(token);
            }
        }
        found
    }
}

/// A new random token: 32 bytes from the operating system, hex-encoded,
/// with a prefix that makes a leaked one easy to recognise.
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!("prs_{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_found_by_its_hash_only() {
        let token = generate_token().unwrap();
        assert!(token.starts_with("prs_") && token.len() == 68);
        assert_ne!(token, generate_token().unwrap());
        let tokens = Tokens::new(vec![ApiToken {
            hash: TokenHash::of(&token),
            role: Role::Editor,
            identity: Identity::new("Ada", "ada@example.org").unwrap(),
        }]);
        assert_eq!(tokens.find(&token).map(|found| found.role), Some(Role::Editor));
        assert!(tokens.find("prs_guess").is_none());
        assert!(tokens.find("").is_none());
        assert!(!format!("{tokens:?}").contains(&TokenHash::of(&token).to_string()[7..]));
    }

    #[test]
    fn the_environment_list_is_read_with_reasons() {
        let hash = TokenHash::of("secret").to_string();
        let list = format!("editor {hash} Ada Lovelace <ada@example.org>; maintainer {hash} Root <root@example.org>\n");
        let tokens = parse_token_list(&list).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].identity.to_string(), "Ada Lovelace <ada@example.org>");
        assert_eq!(tokens[1].role, Role::Maintainer);
        assert_eq!(hash.parse::<TokenHash>().unwrap().to_string(), hash);
        let error = parse_token_list(&format!("admin {hash} A <a@b>")).unwrap_err();
        assert!(error.contains("token 1") && error.contains("not a role"), "{error}");
        let error = parse_token_list("editor secret A <a@b>").unwrap_err();
        assert!(error.contains("not a token hash"), "{error}");
        let error = parse_token_list(&format!("editor {hash} nobody")).unwrap_err();
        assert!(error.contains("Name <email>"), "{error}");
    }

    #[test]
    fn roles_are_ordered_by_what_they_allow() {
        assert!(Role::Maintainer > Role::Editor && Role::Editor > Role::Reader);
        assert_eq!("editor".parse::<Role>(), Ok(Role::Editor));
    }
}
