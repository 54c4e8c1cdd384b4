import ArgumentParser
import Foundation
import ReelCore
import ReelJSON

/// `reelctl budget set|get`: a tenant's budget in weighted provider units (needs an admin key).
struct BudgetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "budget", abstract: "Set or show a tenant's budget (needs an admin key: --key or $REEL_API_KEY).",
        subcommands: [SetBudget.self, GetBudget.self])

    struct SetBudget: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set", abstract: "Set a tenant's budget (--limit 0 removes it).")
        @OptionGroup var global: GlobalOptions
        @Option(name: .long, help: "The tenant (empty with --auth off: the only tenant there is).") var tenant: String = ""
        @Option(name: .long, help: "Units per period (0: no budget).") var limit: Double
        @Option(name: .long, help: "The period in seconds (0: 30 days).") var period: Int64 = 0

        func run() throws {
            try CallFailure.reporting {
                let b = try global.connect().setBudget(tenantID: tenant, limitUnits: limit, periodSeconds: period)
                Terminal.out(global.json ? JSONCoding.encode(BudgetJSON(b)) : BudgetCommand.text(b))
            }
        }
    }

    struct GetBudget: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "get", abstract: "Show a tenant's budget.")
        @OptionGroup var global: GlobalOptions
        @Option(name: .long, help: "The tenant (empty with --auth off: the only tenant there is).") var tenant: String = ""

        func run() throws {
            try CallFailure.reporting {
                let b = try global.connect().budget(tenantID: tenant)
                Terminal.out(global.json ? JSONCoding.encode(BudgetJSON(b)) : BudgetCommand.text(b))
            }
        }
    }

    static func text(_ b: TenantBudget) -> String {
        let u = TenantBudget.units
        var rows: [(String, String)] = [
            ("tenant", b.tenantID.isEmpty ? "(default)" : b.tenantID),
            ("limit", b.limitUnits > 0 ? "\(u(b.limitUnits)) units" : "none (unlimited)"),
            ("spent", "\(u(b.spentUnits)) units"),
            ("reserved", "\(u(b.reservedUnits)) units"),
        ]
        if b.limitUnits > 0 { rows.append(("left", "\(u(max(b.limitUnits - b.spentUnits - b.reservedUnits, 0))) units")) }
        rows.append(("period", "\(b.periodSeconds) s" + (b.periodStartUnixMs > 0 ? " from \(JobFormatting.time(b.periodStartUnixMs))" : "")))
        return JobFormatting.aligned(rows)
    }
}
