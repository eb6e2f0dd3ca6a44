//! `privatehub-test-connection [options] <app-url> <media-url>`; see `--help`.

use std::process::ExitCode;

use privatehub_test_connection::options::{self, Command, USAGE};

fn main() -> ExitCode {
    let options = match options::parse(std::env::args().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("privatehub-test-connection: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("start the async runtime");
    println!(
        "checking app {} and media {} (origin {})",
        options.app_url, options.media_url, options.origin
    );
    let report = runtime.block_on(privatehub_test_connection::run(&options, |result| {
        println!("{result}");
    }));
    println!("{}", report.summary());
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
