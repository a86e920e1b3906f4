//! `NAGARE_HOSTNAME` overrides the hostname seen by `Socket.gethostname`.
//!
//! Its own test binary with a single test: setting a process environment variable while other
//! threads read the environment is not safe.

use std::path::Path;

use nagare_config::parse_str;

#[test]
fn nagare_hostname_overrides_socket_gethostname() {
    std::env::set_var("NAGARE_HOSTNAME", "override-host.local");
    let root = parse_str(
        "a \"#{Socket.gethostname}\"\nb \"#{Socket.gethostname.split('.')[0]}\"\nc \"#{hostname}\"\n",
        Path::new("app.conf"),
    )
    .unwrap();
    let values: Vec<&str> = root.params.iter().map(|p| p.value.as_str()).collect();
    assert_eq!(
        values,
        [
            "override-host.local",
            "override-host",
            "override-host.local"
        ]
    );
}
