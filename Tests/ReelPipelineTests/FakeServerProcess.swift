import Foundation
@testable import ReelPipeline

/// A strict fake of an outside service (`Tests/<dir>/<dir>.py`) run as a child process on a
/// free loopback port: started with `arguments`, it prints `<name> listening on <url>`.
/// Answers the URL and the child (killed by the caller when done).
func startFakeServer(_ dir: String, name: String, arguments: [String]) async throws -> (url: String, process: ChildProcess) {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("\(dir)/\(dir).py").path
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", script, "--port", "0"] + arguments
    let out = Pipe()
    let errPath = NSTemporaryDirectory() + "\(name)-\(UUID().uuidString).err"
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: errPath) }
    p.standardOutput = out
    p.standardError = FileHandle(forWritingAtPath: errPath)
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let child = ChildProcess(p)
    child.startWatchdog(after: .seconds(30))
    let reader = out.fileHandleForReading
    // Blocking reads belong on a thread of their own; the reader then keeps draining stdout.
    let line: String = try await onOwnThread {
        var buffer = [UInt8]()
        while true {
            let chunk = reader.availableData
            if chunk.isEmpty { break }
            buffer += chunk
            if buffer.contains(UInt8(ascii: "\n")) { break }
        }
        Thread { while !reader.availableData.isEmpty {} }.start()
        return String(decoding: buffer, as: UTF8.self)
    }
    child.stopWatchdog()
    guard let start = line.range(of: "\(name) listening on ") else {
        child.kill()
        let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        throw FakeKlingFailed(message: "\(name) did not start: \(line) \(err)")
    }
    return (line[start.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines), child)
}
