//! `libxl_dm`: the firmware devices as `xl`'s device model (`device_model_override`); see
//! [`xen_firmware_dm::libxl_dm`] for the `xl` configuration.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(xen_firmware_dm::libxl_dm::run(
        std::env::args().skip(1).collect(),
    ))
}
