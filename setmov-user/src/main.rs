fn main() -> std::process::ExitCode {
    setmov::cli::main()
}
