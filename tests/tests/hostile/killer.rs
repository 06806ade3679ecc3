//! The daemon of a test, killed if the test fails before stopping it (a panicking test must
//! not leave a daemon running in a deleted namespace).

use std::process::Child;

pub struct Running(Option<Child>);

impl Running {
    pub fn new(child: Child) -> Running {
        Running(Some(child))
    }

    /// The child, for checks while it runs.
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("daemon running")
    }

    /// Stop it with SIGTERM: its exit code and stderr.
    pub fn stop(mut self) -> (i32, String) {
        sip_firewall_tests::daemon::stop(self.0.take().expect("daemon running"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
