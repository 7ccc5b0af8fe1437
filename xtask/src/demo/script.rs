//! What dom0 runs for the demo: its `/init` (the toolstack start and power-off of
//! `xen-test`'s, with `/opt/xen-rs/demo` in between) and the `demo` script itself.
//!
//! The script creates the HVM guest paused (hvmloader + SeaBIOS, the fake device model
//! answering libxl's QMP: xen-testkit's `GuestConfig::hvm_hvmloader()`), starts `firmware_dm`
//! against it, unpauses the guest when the device model says `ready`, passes every line the
//! device model prints to the console, destroys the guest and exits with the device model's
//! status. The host reads it back by the marker lines below.

use crate::xen_test::init_script::{heartbeat, power_off, sh_quote, toolstack_start};
use crate::xen_test::PAYLOAD_DIR;

/// Printed once the guest exists: followed by its domain id.
pub const CREATED_MARKER: &str = "=== demo: guest created paused, domain ";
/// Printed after `xl unpause`.
pub const UNPAUSED_MARKER: &str = "=== demo: guest unpaused";
/// Printed when the device model has exited: followed by its exit status.
pub const DM_EXIT_MARKER: &str = "=== demo: firmware_dm exit ";
/// Printed after `xl destroy`.
pub const DESTROYED_MARKER: &str = "=== demo: guest destroyed";
/// Prefix of the script's complaints.
pub const PROBLEM_PREFIX: &str = "demo: dom0: ";

/// The guest's name in `xl list`.
pub const GUEST_NAME: &str = "xen-rs-demo";
/// The text the device model waits for (SeaBIOS's last words without a disk).
pub const UNTIL: &str = "No bootable device";
/// The device model's own deadline (`--timeout`), seconds.
pub const DM_TIMEOUT_SECS: u64 = 60;

/// The demo's payload names in dom0 (under [`PAYLOAD_DIR`]).
pub const FIRMWARE_DM: &str = "firmware_dm";
/// The fake device model libxl starts (it only answers QMP).
pub const FAKE_DM: &str = "xen-testkit-dm";

/// The guest's xl config: xen-testkit's `GuestConfig::hvm_hvmloader().to_xl_config(..)`
/// (hvmloader + SeaBIOS, 32 MiB, 1 vCPU, no emulated devices but ours), with the fake device
/// model at `fake_dm`.
pub fn xl_config(fake_dm: &str) -> String {
    let mut s = String::new();
    for l in [
        format!("name = \"{GUEST_NAME}\""),
        "type = \"hvm\"".into(),
        "memory = 32".into(),
        "maxmem = 32".into(),
        "vcpus = 1".into(),
        "on_poweroff = \"destroy\"".into(),
        "on_reboot = \"destroy\"".into(),
        "on_crash = \"preserve\"".into(),
        "device_model_version = \"qemu-xen\"".into(),
        format!("device_model_override = \"{fake_dm}\""),
        "vga = \"none\"".into(),
        "vnc = 0".into(),
        "sdl = 0".into(),
        "nographic = 1".into(),
        "serial = \"none\"".into(),
        "usb = 0".into(),
        // No PV keyboard: its backend would be the device model, and libxl then waits 2 s for it
        // when the guest is destroyed (as the testkit measured).
        "vkb_device = 0".into(),
    ] {
        s += &l;
        s += "\n";
    }
    s
}

/// The command line the script runs the device model with (`$domid` filled in by the shell).
/// `--verbose` adds, on stderr, the firmware's MMIO probes, the BAR and option-ROM addresses and
/// the loop's own time per request.
pub fn dm_command() -> String {
    format!(
        "{PAYLOAD_DIR}/{FIRMWARE_DM} \"$domid\" --until {} --timeout {DM_TIMEOUT_SECS} --restrict --verbose",
        sh_quote(UNTIL)
    )
}

/// The `/opt/xen-rs/demo` script.
pub fn demo() -> String {
    let mut s = String::new();
    s += "#!/bin/sh\n";
    s += "# The `cargo xtask demo` run in dom0 (generated): an HVM guest running hvmloader and\n";
    s += "# SeaBIOS, served by our Rust device model, firmware_dm.\n";
    s += &format!("problem() {{ echo \"{PROBLEM_PREFIX}$*\"; }}\n");
    s += "cat >/tmp/demo-guest.cfg <<'EOF'\n";
    s += &xl_config(&format!("{PAYLOAD_DIR}/{FAKE_DM}"));
    s += "EOF\n";
    s += "if ! xl create -p /tmp/demo-guest.cfg >/tmp/xl-create.log 2>&1; then\n";
    s += "    problem 'xl create failed:'; cat /tmp/xl-create.log; exit 1\n";
    s += "fi\n";
    s += &format!("domid=$(xl domid {GUEST_NAME})\n");
    s += &format!("echo \"{CREATED_MARKER}$domid\"\n");
    // Every line of the device model goes to the console as it comes; its `ready` line (set-up
    // done) lets the guest run. Its status goes through a file: the loop is a subshell.
    s += "echo 1 >/tmp/dm.rc\n";
    s += &format!(
        "{{ timeout -k 5 {} {} 2>&1; echo $? >/tmp/dm.rc; }} | while IFS= read -r line; do\n",
        DM_TIMEOUT_SECS + 30,
        dm_command()
    );
    s += "    printf '%s\\n' \"$line\"\n";
    s += "    case \"$line\" in\n";
    s += "    *'firmware_dm: serving domain'*ready)\n";
    s += &format!(
        "        xl unpause \"$domid\" </dev/null && echo '{UNPAUSED_MARKER}' || problem 'xl unpause failed' ;;\n"
    );
    s += "    esac\n";
    s += "done\n";
    s += "rc=$(cat /tmp/dm.rc)\n";
    s += &format!("echo \"{DM_EXIT_MARKER}$rc\"\n");
    // SeaBIOS now waits 60 s to retry, without a device model: the guest goes.
    s += &format!(
        "xl destroy \"$domid\" && echo '{DESTROYED_MARKER}' || {{ problem 'xl destroy failed'; rc=1; }}\n"
    );
    s += "exit $rc\n";
    s
}

/// dom0's `/init` for the demo.
pub fn init(modules: &[String], xen_bin: &str) -> String {
    let mut s = toolstack_start("demo", modules, xen_bin);
    s += &heartbeat();
    s += &format!("{PAYLOAD_DIR}/demo\nrc=$?\n");
    s += &power_off();
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xen_test::init_script::INIT_MARKER;

    #[test]
    fn xl_config_is_the_testkits_hvmloader_guest() {
        let c = xl_config("/opt/xen-rs/xen-testkit-dm");
        for l in [
            "type = \"hvm\"\n",
            "memory = 32\n",
            "vcpus = 1\n",
            "device_model_version = \"qemu-xen\"\n",
            "device_model_override = \"/opt/xen-rs/xen-testkit-dm\"\n",
            "serial = \"none\"\n",
            "vga = \"none\"\n",
            "vkb_device = 0\n",
        ] {
            assert!(c.contains(l), "no {l:?} in:\n{c}");
        }
        // hvmloader + SeaBIOS: no firmware of our own.
        assert!(!c.contains("firmware_override"));
        assert!(c.lines().all(|l| l.contains(" = ")));
    }

    #[test]
    fn demo_script_order() {
        let s = demo();
        let pos = |needle: &str| {
            s.find(needle)
                .unwrap_or_else(|| panic!("no `{needle}` in:\n{s}"))
        };
        assert!(pos("xl create -p /tmp/demo-guest.cfg") < pos(CREATED_MARKER));
        assert!(pos(CREATED_MARKER) < pos("/opt/xen-rs/firmware_dm \"$domid\""));
        assert!(s.contains(
            "/opt/xen-rs/firmware_dm \"$domid\" --until 'No bootable device' --timeout 60 --restrict --verbose 2>&1"
        ));
        assert!(pos("firmware_dm \"$domid\"") < pos("xl unpause \"$domid\" </dev/null"));
        assert!(pos("xl unpause") < pos(DM_EXIT_MARKER));
        assert!(pos(DM_EXIT_MARKER) < pos("xl destroy \"$domid\""));
        assert!(s.ends_with("exit $rc\n"));
        // The heredoc holds the config verbatim and ends.
        assert!(s.contains(&format!(
            "<<'EOF'\n{}EOF\n",
            xl_config("/opt/xen-rs/xen-testkit-dm")
        )));
    }

    #[test]
    fn init_runs_the_demo_between_toolstack_and_power_off() {
        let s = init(
            &["/lib/modules/r/xen-privcmd.ko".into()],
            "/usr/lib/xen-4.17/bin",
        );
        let pos = |needle: &str| s.find(needle).unwrap();
        assert!(pos(INIT_MARKER) < pos("xenconsoled --pid-file"));
        assert!(pos("xenconsoled --pid-file") < pos("/opt/xen-rs/demo\nrc=$?\n"));
        assert!(pos("/opt/xen-rs/demo\n") < pos("seek=244"));
        assert!(s.contains("`cargo xtask demo`"));
    }
}
