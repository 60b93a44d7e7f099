//! The `setmov` command, built inside the tests package so its integration tests can run it
//! as a real process (Cargo only exposes binaries of the package under test).

fn main() -> std::process::ExitCode {
    setmov::cli::main()
}
