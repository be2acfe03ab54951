fn main() {
    println!("mmx {}", env!("CARGO_PKG_VERSION"));
}
