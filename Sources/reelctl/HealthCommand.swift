import ArgumentParser
import ReelJSON

struct HealthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Ask grpc.health.v1.Health/Check; exit 0 when SERVING, 3 otherwise.")

    @OptionGroup var global: GlobalOptions
    @Option(help: "The service to ask about (empty: the server as a whole).") var service = ""

    func run() throws {
        let status = try CallFailure.reporting { try global.connect().healthCheck(service: service) }
        let names = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]
        let name = names.indices.contains(Int(status)) ? names[Int(status)] : "STATUS_\(status)"
        Terminal.out(global.json ? JSONCoding.encode(["status": name]) : name)
        if status != 1 { throw ExitCode(3) }
    }
}
