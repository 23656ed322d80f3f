//! The client of the two-terminal pair: calls the `server` binary at
//! `--addr` (default 127.0.0.1:7878), both of its services over one
//! connection, and prints the results.

use rpc_core::Channel;
use rpc_examples::{CalculatorClient, SeedObjectsClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rpc_examples::init_logging();
    let addr = rpc_examples::addr_arg("127.0.0.1:7878")?;
    let channel = Channel::connect(addr.as_str()).await?;
    let calc = CalculatorClient::new(channel.clone());
    let seeds = SeedObjectsClient::new(channel);

    println!("add(2, 3)          = {}", calc.add(2, 3).await?);
    println!("div(7, 2)          = {:?}", calc.div(7, 2).await?);
    println!("div(7, 0)          = {:?}", calc.div(7, 0).await?);
    println!("get_obj()          = {:?}", seeds.get_obj().await?);
    seeds.send_obj("lxx nb".to_owned()).await?;
    println!("send_obj(\"lxx nb\") = ()");
    Ok(())
}
