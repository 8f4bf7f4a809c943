using NUnit.Framework;
namespace Engine.Tests;
public class SmokeTests { [Test] public void Runs() { int x = 1; Assert.That(x + 1, Is.EqualTo(2)); } [Test, Category("Gpu")] public void G() => Assert.Ignore("no gpu"); }
