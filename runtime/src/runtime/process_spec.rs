//! What a container runs, from the image and the request alone: the command (entrypoint and
//! cmd merged as containerd does), the environment, the stop signal. Pure functions, no I/O.

use nix::sys::signal::Signal;

use crate::{Error, Result};

pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's rule: a command replaces the image's entrypoint and cmd; args alone replace
/// the cmd; neither means entrypoint + cmd.
pub fn merge_command(
    image: &image_service::ImageConfig,
    command: &[String],
    args: &[String],
) -> Result<Vec<String>> {
    let mut cmd = command.to_vec();
    let mut args = args.to_vec();
    if cmd.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            cmd = image.entrypoint.clone();
        }
    }
    cmd.extend(args);
    if cmd.is_empty() {
        return Err(Error::InvalidArgument(
            "no command specified: the container config and the image give none".into(),
        ));
    }
    Ok(cmd)
}

/// Sets `KEY=VALUE` in `env`, replacing an earlier value of the same key in place.
pub(super) fn set_env(env: &mut Vec<String>, kv: String) {
    let key = kv
        .split_once('=')
        .map(|(k, _)| k)
        .unwrap_or(&kv)
        .to_string();
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map(|(k, _)| k).unwrap_or(e) == key)
    {
        Some(slot) => *slot = kv,
        None => env.push(kv),
    }
}

pub(super) fn signal_by_name(name: &str) -> Signal {
    let upper = name.trim().to_ascii_uppercase();
    if upper.is_empty() {
        return Signal::SIGTERM;
    }
    if let Ok(n) = upper.parse::<i32>() {
        return Signal::try_from(n).unwrap_or(Signal::SIGTERM);
    }
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().unwrap_or(Signal::SIGTERM)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entrypoint: &[&str], cmd: &[&str]) -> image_service::ImageConfig {
        image_service::ImageConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_merging_follows_containerd() {
        let img = cfg(&["/entry"], &["default"]);
        assert_eq!(
            merge_command(&img, &[], &[]).expect("m"),
            v(&["/entry", "default"])
        );
        assert_eq!(
            merge_command(&img, &[], &v(&["x"])).expect("m"),
            v(&["/entry", "x"])
        );
        assert_eq!(
            merge_command(&img, &v(&["/bin/sh"]), &[]).expect("m"),
            v(&["/bin/sh"])
        );
        assert_eq!(
            merge_command(&img, &v(&["/bin/sh"]), &v(&["-c", "true"])).expect("m"),
            v(&["/bin/sh", "-c", "true"])
        );
        assert_eq!(
            merge_command(&cfg(&[""], &["sh"]), &[], &[]).expect("m"),
            v(&["sh"])
        );
        assert!(matches!(
            merge_command(&cfg(&[], &[]), &[], &[]),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn env_later_values_replace_earlier_ones_in_place() {
        let mut env = v(&["A=1", "PATH=/bin"]);
        set_env(&mut env, "PATH=/usr/bin".into());
        set_env(&mut env, "B=2".into());
        assert_eq!(env, v(&["A=1", "PATH=/usr/bin", "B=2"]));
    }

    #[test]
    fn stop_signal_names() {
        assert_eq!(signal_by_name(""), Signal::SIGTERM);
        assert_eq!(signal_by_name("SIGQUIT"), Signal::SIGQUIT);
        assert_eq!(signal_by_name("int"), Signal::SIGINT);
        assert_eq!(signal_by_name("9"), Signal::SIGKILL);
        assert_eq!(signal_by_name("bogus"), Signal::SIGTERM);
    }
}
