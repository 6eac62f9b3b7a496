fn main() {
    println!("turnpike");
}
