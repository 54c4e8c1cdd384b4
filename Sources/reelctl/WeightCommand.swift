import ArgumentParser
import Foundation
import ReelCore
import ReelJSON

/// `reelctl weight set|get`: a tenant's fair-share weight (needs an admin key). Tenants share
/// scarce workers and provider slots in proportion to their weights, by the cost they start.
struct WeightCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "weight", abstract: "Set or show a tenant's fair-share weight (needs an admin key: --key or $REEL_API_KEY).",
        subcommands: [SetWeight.self, GetWeight.self])

    struct SetWeight: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set", abstract: "Set a tenant's weight (default 1).")
        @OptionGroup var global: GlobalOptions
        @Option(name: .long, help: "The tenant (empty with --auth off: the only tenant there is).") var tenant: String = ""
        @Argument(help: "The weight: greater than 0, at most 1000.") var weight: Double

        func run() throws {
            try CallFailure.reporting {
                let w = try global.connect().setWeight(tenantID: tenant, weight: weight)
                Terminal.out(WeightCommand.render(tenant, w, json: global.json))
            }
        }
    }

    struct GetWeight: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "get", abstract: "Show a tenant's weight.")
        @OptionGroup var global: GlobalOptions
        @Option(name: .long, help: "The tenant (empty with --auth off: the only tenant there is).") var tenant: String = ""

        func run() throws {
            try CallFailure.reporting {
                Terminal.out(WeightCommand.render(tenant, try global.connect().weight(tenantID: tenant), json: global.json))
            }
        }
    }

    struct Answer: Encodable { let tenant_id: String; let weight: Double }

    static func render(_ tenant: String, _ weight: Double, json: Bool) -> String {
        json ? JSONCoding.encode(Answer(tenant_id: tenant, weight: weight))
             : JobFormatting.aligned([("tenant", tenant.isEmpty ? "(default)" : tenant), ("weight", TenantBudget.units(weight))])
    }
}
