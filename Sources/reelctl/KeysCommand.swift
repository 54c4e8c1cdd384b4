import ArgumentParser
import ReelCore
import ReelJSON

/// `reelctl keys create|list|revoke`: tenants' API keys (needs an admin key in --key).
struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Manage API keys (needs an admin key: --key or $REEL_API_KEY).",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Create a key for a tenant; prints its secret once.")
        @OptionGroup var global: GlobalOptions
        @Option(name: .long, help: "The tenant the key acts for.") var tenant: String
        @Flag(name: .long, help: "An admin key: sees every tenant, manages keys, serves workers.") var admin = false
        @Option(name: .long, help: "Requests per second for this tenant (0: the server's default).") var rate: Int32 = 0

        func run() throws {
            try CallFailure.reporting {
                let (key, secret, hook) = try global.connect().createKey(tenantID: tenant, admin: admin, rate: rate)
                // The tenant's webhook signing secret comes with its first key only, and only here.
                let hookLine = hook.isEmpty ? "" : "webhook signing secret (shown once): \(hook)\n"
                Terminal.out(global.json ? KeysCommand.json(key, secret: secret, webhookSecret: hook.isEmpty ? nil : hook)
                                         : "\(secret)\n" + hookLine + KeysCommand.text(key))
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List keys (never their secrets).")
        @OptionGroup var global: GlobalOptions
        @Option(name: .long, help: "Only this tenant's keys.") var tenant: String = ""

        func run() throws {
            try CallFailure.reporting {
                let keys = try global.connect().listKeys(tenantID: tenant)
                Terminal.out(keys.map { global.json ? KeysCommand.json($0) : KeysCommand.text($0) }.joined(separator: "\n"))
            }
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revoke a key by id.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The key's id.") var id: String

        func run() throws {
            try CallFailure.reporting {
                let key = try global.connect().revokeKey(id: id)
                Terminal.out(global.json ? KeysCommand.json(key) : KeysCommand.text(key))
            }
        }
    }

    static func text(_ k: APIKey) -> String {
        "\(k.id)  tenant=\(k.tenantID)  prefix=\(k.prefix)…  admin=\(k.admin)  rate=\(k.rateLimitPerSecond)/s\(k.revoked ? "  REVOKED" : "")"
    }

    static func json(_ k: APIKey, secret: String? = nil, webhookSecret: String? = nil) -> String {
        var j = APIKeyJSON(k, secret: secret)
        j.webhookSecret = webhookSecret
        return JSONCoding.encode(j)
    }
}
