//! `nagare-forwarder`: one per container host. Receives Docker's `fluentd` log driver (the
//! forward protocol), and ships to S3 and the aggregator fleet.

fn main() -> std::process::ExitCode {
    nagare_pipeline::cli::main(nagare_pipeline::cli::Role::Forwarder)
}
