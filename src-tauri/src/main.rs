//! `duress-agent`: see `duress_agent` (src/lib.rs).
//!
//! Windows: a GUI-subsystem program, so the tray started at logon (HKLM Run, the scheduled task)
//! opens no console window — a console subsystem `.exe` gets one from Windows before `main`
//! runs, which would break the agent's silence. The CLI subcommands then write to the console
//! of the shell that started them ([`console::attach_parent`]) when their output is not
//! redirected; a redirected or piped output (scripts, Intune detection) is used as is.
#![cfg_attr(windows, windows_subsystem = "windows")]

fn main() -> std::process::ExitCode {
    #[cfg(windows)]
    if std::env::args_os().len() > 1 {
        console::attach_parent();
    }
    duress_agent::run()
}

#[cfg(windows)]
mod console {
    //! kernel32's `GetStdHandle`/`AttachConsole`, declared here rather than through a bindings
    //! crate: two functions, no new dependency.
    #![allow(unsafe_code)]

    const STD_OUTPUT_HANDLE: u32 = -11i32 as u32;
    const ATTACH_PARENT_PROCESS: u32 = u32::MAX;

    #[link(name = "kernel32")]
    unsafe extern "system" {
        fn GetStdHandle(which: u32) -> isize;
        fn AttachConsole(process_id: u32) -> i32;
    }

    /// Attaches to the parent's console when standard output goes nowhere (a GUI-subsystem
    /// program started from cmd or PowerShell without redirection); Rust's std looks the
    /// handles up at each write, so `println!` then reaches that console. No parent console
    /// (Explorer, Task Scheduler): nothing happens and output is dropped, as for any GUI app.
    pub fn attach_parent() {
        // SAFETY: both calls take plain integers and touch no memory of ours; a failure is an
        // error code (0 or INVALID_HANDLE_VALUE), never undefined behaviour.
        unsafe {
            let out = GetStdHandle(STD_OUTPUT_HANDLE);
            if out == 0 || out == -1 {
                AttachConsole(ATTACH_PARENT_PROCESS);
            }
        }
    }
}
