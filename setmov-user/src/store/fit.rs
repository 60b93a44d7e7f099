//! Text from outside (libvirt, the command line) that the schema bounds: a VM's or a host's
//! name is at most [`NAME_CHARS`] characters in both stores (MySQL's `VARCHAR(255)`), so a longer
//! one is cut when the tick is built, never refused by the database.

/// The longest host or VM name stored, in characters.
pub const NAME_CHARS: usize = 255;

/// `name` cut to [`NAME_CHARS`] characters; `None` when it fits.
pub fn cut_name(name: &str) -> Option<String> {
    name.char_indices()
        .nth(NAME_CHARS)
        .map(|(end, _)| name[..end].to_owned())
}

/// Checks a host name given on the command line or in the configuration file.
pub fn check_host_name(name: &str) -> Result<String, String> {
    match cut_name(name) {
        None => Ok(name.to_owned()),
        Some(_) => Err(format!("at most {NAME_CHARS} characters")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_on_a_character_boundary() {
        assert_eq!(cut_name("desk-1"), None);
        let long = "é".repeat(300);
        let cut = cut_name(&long).expect("cut");
        assert_eq!(cut.chars().count(), NAME_CHARS);
        assert_eq!(cut_name(&cut), None);
        assert!(check_host_name(&"h".repeat(256)).is_err());
        assert_eq!(check_host_name("hv1").as_deref(), Ok("hv1"));
    }
}
