use std::process::ExitCode;

/// glibc's malloc or mimalloc, chosen per command (see `personas::allocator`).
#[global_allocator]
static ALLOCATOR: personas::allocator::PerCommandAllocator = personas::allocator::PerCommandAllocator;

fn main() -> ExitCode {
    personas::cli::main()
}
