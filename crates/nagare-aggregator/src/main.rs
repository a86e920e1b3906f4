//! `nagare-aggregator`: behind an NLB. Receives from forwarders and writes errors to
//! CloudWatch Logs, one stream per aggregator host.

fn main() -> std::process::ExitCode {
    nagare_pipeline::cli::main(nagare_pipeline::cli::Role::Aggregator)
}
