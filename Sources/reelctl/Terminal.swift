#if canImport(Glibc)
import Glibc
#endif

/// Unbuffered writes to stdout/stderr, so each watch line reaches a pipe at once.
enum Terminal {
    static func out(_ line: String) { write(1, line + "\n") }
    static func err(_ line: String) { write(2, line + "\n") }

    /// Writes without a newline (the progress line redraws itself in place).
    static func write(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
            if n < 0 {
                if errno == EINTR { continue }
                return  // a closed pipe: nothing useful to do with the output
            }
            off += n
        }
    }

    static var stdoutIsTerminal: Bool { isatty(1) == 1 }

    /// Columns of the terminal on stdout (the COLUMNS variable, else 80).
    static var columns: Int {
        var size = winsize()
        if ioctl(1, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
        if let c = getenv("COLUMNS").flatMap({ Int(String(cString: $0)) }), c > 0 { return c }
        return 80
    }
}
