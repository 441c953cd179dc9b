fn main() -> std::process::ExitCode {
    syno_chat_gateway::cli::main()
}
