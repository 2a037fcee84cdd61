fn main() {
    eprintln!("credguard dev launcher: not written yet");
    std::process::exit(2);
}
