//! The lock benchmark. (Scaffold: the lockbench work fills this in.)

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub json: bool,
}

pub fn cli(args: Args) -> anyhow::Result<()> {
    let _ = args.json;
    anyhow::bail!("lockbench: not built yet")
}
