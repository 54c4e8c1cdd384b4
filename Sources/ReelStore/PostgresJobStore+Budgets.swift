import ReelCore

extension PostgresJobStore: BudgetStore {
    public func setBudget(tenantID: String, limitUnits: Double, periodSeconds: Int64) async throws -> TenantBudget {
        let period = periodSeconds > 0 ? periodSeconds : TenantBudget.defaultPeriodSeconds
        return try await pool.withConnection { c in
            guard let r = try c.query(SQL.setBudget, [tenantID, String(limitUnits), String(period)]).first else {
                throw ReelError(.internal, "budget of tenant \(tenantID) not stored")
            }
            return Self.decodeBudget(r)
        }
    }

    public func budget(tenantID: String) async throws -> TenantBudget {
        try await pool.withConnection { c in
            try c.query(SQL.budgetByTenant, [tenantID]).first.map(Self.decodeBudget) ?? TenantBudget(tenantID: tenantID)
        }
    }

    public func setWeight(tenantID: String, weight: Double) async throws -> Double {
        try await pool.withConnection { c in
            Double(try c.query(SQL.setTenantWeight, [tenantID, String(weight)]).first?[0] ?? "") ?? weight
        }
    }

    public func weight(tenantID: String) async throws -> Double {
        try await pool.withConnection { c in
            try c.query(SQL.tenantWeight, [tenantID]).first.flatMap { Double($0[0] ?? "") } ?? TenantWeight.default
        }
    }

    static func decodeBudget(_ r: [String?]) -> TenantBudget {
        TenantBudget(tenantID: r[0] ?? "", limitUnits: Double(r[1] ?? "") ?? 0, spentUnits: Double(r[2] ?? "") ?? 0,
                     reservedUnits: Double(r[3] ?? "") ?? 0, periodStartUnixMs: Int64(r[4] ?? "") ?? 0,
                     periodSeconds: Int64(r[5] ?? "") ?? TenantBudget.defaultPeriodSeconds)
    }
}
