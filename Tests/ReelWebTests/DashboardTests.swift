import Foundation
import Testing
@testable import ReelWeb

/// The dashboard's files come from the module's resource bundle, and the page asks for nothing else.
struct DashboardTests {
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Sources/ReelWeb/Dashboard").standardized

    @Test func servesEachFileAsItIsInTheSourceTree() throws {
        let dashboard = try Dashboard.load()
        for file in Dashboard.files {
            let body = try #require(dashboard.bodies[file.name], "\(file.name) not loaded")
            let source = try Data(contentsOf: Self.sources.appendingPathComponent(file.name))
            #expect(Array(body.readableBytesView) == Array(source), "\(file.name) differs from its source")
        }
    }

    @Test func everyFileThePageLinksIsOneItServes() throws {
        let dashboard = try Dashboard.load()
        let page = String(decoding: try #require(dashboard.bodies["index.html"]).readableBytesView, as: UTF8.self)
        let links = page.matches(of: /(?:href|src)="([^"]*)"/).map { String($0.output.1) }
        #expect(Set(links) == ["/favicon.ico", "/dashboard.css", "/dashboard.js"])
        let routes = Set(Dashboard.files.flatMap(\.routes))
        for link in links { #expect(routes.contains(link), "the page links \(link), which nothing serves") }
    }
}
