//! Which passwords are acceptable: long enough, not guessable by zxcvbn, not on the bundled list
//! of common breached passwords.

use std::collections::HashSet;
use std::sync::OnceLock;

pub const MIN_PASSWORD_CHARS: usize = 12;
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Why a password was refused, phrased for the person choosing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordRejection(pub String);

impl std::fmt::Display for PasswordRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

static COMMON: OnceLock<HashSet<&'static str>> = OnceLock::new();

fn common_passwords() -> &'static HashSet<&'static str> {
    COMMON.get_or_init(|| {
        include_str!("common-passwords.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

/// `user_inputs` are words the password must not lean on (email, display name).
pub fn check_password_strength(password: &str, user_inputs: &[&str]) -> Result<(), PasswordRejection> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(PasswordRejection(format!(
            "Use at least {MIN_PASSWORD_CHARS} characters; a few unrelated words make a strong password."
        )));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordRejection(format!("Use at most {MAX_PASSWORD_CHARS} characters.")));
    }
    if common_passwords().contains(password.to_lowercase().as_str()) {
        return Err(PasswordRejection("This password appears in lists of breached passwords; choose another.".into()));
    }
    // zxcvbn matches user inputs as whole tokens: give it the words of an email or a name too.
    let words: Vec<String> = user_inputs
        .iter()
        .flat_map(|input| {
            std::iter::once(input.to_lowercase()).chain(
                input.split(|c: char| !c.is_alphanumeric()).filter(|w| w.chars().count() >= 3).map(str::to_lowercase),
            )
        })
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    if leans_on_user_words(password, &words) {
        return Err(PasswordRejection(
            "This password is built on your name or email address; choose words unrelated to you.".into(),
        ));
    }
    if leans_on_user_words(password, CONTEXT_WORDS) {
        return Err(PasswordRejection(
            "This password is built on the name of this service or a word every guesser tries first; choose unrelated words."
                .into(),
        ));
    }
    let words: Vec<&str> = words.iter().copied().chain(CONTEXT_WORDS.iter().copied()).collect();
    let estimate = zxcvbn::zxcvbn(password, &words);
    if u8::from(estimate.score()) < 3 {
        let hint = estimate.feedback().and_then(|f| f.warning().map(|w| w.to_string())).filter(|w| !w.is_empty());
        let mut msg = String::from("This password is too easy to guess.");
        if let Some(hint) = hint {
            msg.push(' ');
            msg.push_str(&hint);
        }
        msg.push_str(" Add another uncommon word or two.");
        return Err(PasswordRejection(msg));
    }
    Ok(())
}

/// Words of this service and of sign-in itself that guessers try first (ASVS 6.2.11): a password
/// that is mostly these is refused, and zxcvbn counts them as known words.
pub const CONTEXT_WORDS: &[&str] = &[
    "conclave",
    "password",
    "passwort",
    "motdepasse",
    "contrasena",
    "wachtwoord",
    "login",
    "signin",
    "welcome",
    "bienvenue",
    "secret",
    "admin",
    "administrator",
    "letmein",
    "changeme",
];

/// True when little of the password is left once the user's own words are taken out.
fn leans_on_user_words(password: &str, words: &[&str]) -> bool {
    let mut rest: String = password.to_lowercase().chars().filter(|c| c.is_alphanumeric()).collect();
    let before = rest.chars().count();
    for word in words.iter().filter(|w| w.chars().all(char::is_alphanumeric)) {
        rest = rest.replace(word, "");
    }
    let after = rest.chars().count();
    after < before && after < 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_short_common_and_guessable() {
        assert!(check_password_strength("short", &[]).is_err());
        for weak in ["passwordpassword", "123456789012", "qwertyuiopas", "Password1234", "iloveyou1234"] {
            assert!(check_password_strength(weak, &[]).is_err(), "{weak} accepted");
        }
    }

    #[test]
    fn refuses_passwords_built_on_the_service_or_sign_in_words() {
        for weak in ["Conclave2024!!", "conclave-welcome", "ChangeMe-Conclave1", "motdepasse-admin"] {
            assert!(check_password_strength(weak, &[]).is_err(), "{weak} accepted");
        }
        assert!(check_password_strength("conclave lighthouse marmalade", &[]).is_ok(), "one word among others is fine");
    }

    #[test]
    fn refuses_passwords_built_on_the_users_own_name() {
        let me = ["alice.martin@firm.example", "Alice Martin"];
        assert!(check_password_strength("alice.martin2024", &me).is_err());
        assert!(check_password_strength("Martin-Alice-firm!", &me).is_err());
        assert!(check_password_strength("alice-juniper-quarry-lantern", &me).is_ok());
    }

    #[test]
    fn accepts_a_passphrase() {
        assert!(check_password_strength("correct-horse-battery-staple-42", &[]).is_ok());
    }

    #[test]
    fn bundled_list_is_loaded() {
        assert!(common_passwords().len() > 50);
    }
}
