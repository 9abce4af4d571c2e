use std::process::ExitCode;

fn main() -> ExitCode {
    personas::cli::main()
}
